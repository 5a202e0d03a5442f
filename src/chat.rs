//! `chat`: an interactive conversation in RWKV's chat format, keeping the RNN state between
//! turns so earlier turns are never read again.
//!
//! The slot's state always equals the transcript so far: a turn feeds only its new text
//! (`User: …\n\nAssistant:`), the reply's tokens are fed as they are generated, and the reply
//! ends at `\n\nUser:` (which the state then already holds), at end of text, at the token
//! limit, or on Ctrl-C. After every turn a line on stderr says how many tokens the turn fed.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use rwkv_engine::Engine;
use rwkv_model::State;
use rwkv_tokenizer::Tokenizer;

use crate::textgen::{feed, generate, Generation, StopReason};

const SLOT: usize = 0;
const USER_PREFIX: &str = "\n\nUser:";
/// The state file's metadata key holding [`Tail`].
const TAIL_KEY: &str = "chat.tail";

pub struct ChatOptions {
    pub system: Option<String>,
    pub max_tokens: usize,
}

/// Where the transcript the state holds ends, so the next turn feeds exactly the missing text.
#[derive(Clone, Debug, PartialEq)]
enum Tail {
    /// Nothing fed yet.
    Empty,
    /// The state ends with `\n\nUser:` and then this text (the reply stopped there).
    UserPrefix(String),
    /// The state ends elsewhere (a system text, end of text, token limit, interrupted).
    Other,
}

impl Tail {
    /// The text to feed for the user's `line`.
    fn turn_text(&self, line: &str) -> String {
        let turn = format!(" {line}\n\nAssistant:");
        match self {
            Tail::Empty => format!("User:{turn}"),
            Tail::UserPrefix(after) => match turn.strip_prefix(after.as_str()) {
                Some(rest) => rest.to_string(),
                None => format!("{USER_PREFIX}{turn}"),
            },
            Tail::Other => format!("{USER_PREFIX}{turn}"),
        }
    }

    fn to_meta(&self) -> String {
        match self {
            Tail::Empty => "empty".into(),
            Tail::UserPrefix(after) => format!("user:{after}"),
            Tail::Other => "other".into(),
        }
    }

    /// A state file without the key (saved by something else) continues with a new turn.
    fn from_meta(s: Option<&String>) -> Tail {
        match s.map(String::as_str) {
            Some("empty") => Tail::Empty,
            Some(s) if s.starts_with("user:") => Tail::UserPrefix(s["user:".len()..].to_string()),
            _ => Tail::Other,
        }
    }
}

/// Runs the conversation until `/quit` or the end of `input`.
pub fn run(
    engine: &mut Engine,
    tokenizer: &Tokenizer,
    options: &ChatOptions,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    ctrl_c: &CtrlC,
) -> Result<()> {
    let reset = |engine: &mut Engine| -> Result<()> {
        engine.reset(SLOT)?;
        engine.reset_sampling(SLOT)?;
        Ok(())
    };
    let system = |engine: &mut Engine| -> Result<Tail> {
        if let Some(system) = &options.system {
            let tokens = tokenizer.encode(system.trim_end().as_bytes());
            if !tokens.is_empty() {
                crate::textgen::advance(engine, SLOT, &tokens)?;
                return Ok(Tail::Other);
            }
        }
        Ok(Tail::Empty)
    };
    reset(engine)?;
    let mut tail = system(engine)?;
    writeln!(
        out,
        "chat: type a message; /reset, /save FILE, /load FILE, /quit (Ctrl-C stops a reply)"
    )?;
    loop {
        write!(out, "\nUser: ")?;
        out.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            writeln!(out)?;
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(c, a)| (c, a.trim()))
        {
            ("/quit", _) | ("/exit", _) => break,
            ("/reset", _) => {
                reset(engine)?;
                tail = system(engine)?;
                writeln!(out, "(conversation reset)")?;
                continue;
            }
            ("/save", path) if !path.is_empty() => {
                let saved = engine
                    .read_state(SLOT)
                    .context("reading the state")
                    .and_then(|state| {
                        let bytes = state
                            .to_safetensors_with(&engine.config, &[(TAIL_KEY, &tail.to_meta())])?;
                        std::fs::write(path, bytes).with_context(|| format!("writing {path}"))
                    });
                match saved {
                    Ok(()) => writeln!(out, "(state saved to {path})")?,
                    Err(e) => writeln!(out, "(could not save: {e:#})")?,
                }
                continue;
            }
            ("/load", path) if !path.is_empty() => {
                let loaded = std::fs::read(Path::new(path))
                    .with_context(|| format!("reading {path}"))
                    .and_then(|bytes| {
                        let state = State::from_safetensors(&bytes, &engine.config)?;
                        let meta = State::metadata(&bytes)?;
                        Ok((state, Tail::from_meta(meta.get(TAIL_KEY))))
                    });
                match loaded {
                    Ok((state, t)) => {
                        engine.write_state(SLOT, &state)?;
                        engine.reset_sampling(SLOT)?;
                        tail = t;
                        writeln!(out, "(state loaded from {path})")?;
                    }
                    Err(e) => writeln!(out, "(could not load: {e:#})")?,
                }
                continue;
            }
            (cmd, _) if cmd.starts_with('/') => {
                writeln!(
                    out,
                    "(unknown command {cmd}; /reset, /save FILE, /load FILE, /quit)"
                )?;
                continue;
            }
            _ => {}
        }
        let tokens = tokenizer.encode(tail.turn_text(line).as_bytes());
        // From here Ctrl-C stops the reply (before its first token if it comes during the
        // prefill), not the program.
        ctrl_c.start_reply();
        let started = Instant::now();
        let first = feed(engine, SLOT, &tokens);
        let prefill = started.elapsed();
        let first = first.inspect_err(|_| ctrl_c.end_reply())?;
        write!(out, "\nAssistant:")?;
        out.flush()?;
        let g = Generation {
            max_tokens: options.max_tokens,
            stop: vec![USER_PREFIX.to_string()],
            feed_last: true,
            interrupt: &ctrl_c.interrupt,
        };
        let result = generate(engine, tokenizer, SLOT, first, &g, &mut |t| {
            out.write_all(t.as_bytes())?;
            out.flush()?;
            Ok(())
        });
        ctrl_c.end_reply();
        let reply = result?;
        tail = match &reply.stop {
            StopReason::StopString(_) => Tail::UserPrefix(reply.after_stop.clone()),
            _ => Tail::Other,
        };
        if reply.stop == StopReason::Interrupted {
            write!(out, " (stopped)")?;
        }
        writeln!(out)?;
        let rate = |n: usize, d: std::time::Duration| n as f64 / d.as_secs_f64().max(1e-9);
        eprintln!(
            "[turn: prompt {} tokens, {:.1} tok/s | reply {} tokens, {:.1} tok/s | stop: {}]",
            tokens.len(),
            rate(tokens.len(), prefill),
            reply.tokens.len(),
            rate(reply.tokens.len().saturating_sub(1), reply.decode),
            reply.stop
        );
    }
    Ok(())
}

/// Ctrl-C: while a reply is being generated it stops that reply; otherwise it ends the program.
pub struct CtrlC {
    interrupt: Arc<AtomicBool>,
    replying: Arc<AtomicBool>,
}

impl CtrlC {
    /// Installs the handler.
    pub fn install() -> Result<CtrlC> {
        let interrupt = Arc::new(AtomicBool::new(false));
        let replying = Arc::new(AtomicBool::new(false));
        let (i, r) = (interrupt.clone(), replying.clone());
        ctrlc::set_handler(move || {
            if r.load(Ordering::SeqCst) {
                i.store(true, Ordering::SeqCst);
            } else {
                eprintln!();
                std::process::exit(130);
            }
        })
        .context("installing the Ctrl-C handler")?;
        Ok(CtrlC {
            interrupt,
            replying,
        })
    }

    fn start_reply(&self) {
        self.interrupt.store(false, Ordering::SeqCst);
        self.replying.store(true, Ordering::SeqCst);
    }

    fn end_reply(&self) {
        self.replying.store(false, Ordering::SeqCst);
        self.interrupt.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_feed_only_the_missing_text() {
        assert_eq!(Tail::Empty.turn_text("hi"), "User: hi\n\nAssistant:");
        assert_eq!(Tail::Other.turn_text("hi"), "\n\nUser: hi\n\nAssistant:");
        assert_eq!(
            Tail::UserPrefix(String::new()).turn_text("hi"),
            " hi\n\nAssistant:"
        );
        assert_eq!(
            Tail::UserPrefix(" ".into()).turn_text("hi"),
            "hi\n\nAssistant:"
        );
        assert_eq!(
            Tail::UserPrefix(" Bob".into()).turn_text("hi"),
            "\n\nUser: hi\n\nAssistant:"
        );
        for t in [
            Tail::Empty,
            Tail::Other,
            Tail::UserPrefix(String::new()),
            Tail::UserPrefix(" x".into()),
        ] {
            assert_eq!(Tail::from_meta(Some(&t.to_meta())), t);
        }
        assert_eq!(Tail::from_meta(None), Tail::Other);
    }
}

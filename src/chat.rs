//! `chat`: an interactive conversation in RWKV's chat format, keeping the RNN state between
//! turns so earlier turns are never read again.
//!
//! The slot's state always equals the transcript so far: a turn feeds only its new text
//! (`User: …\n\nAssistant:`), the reply's tokens are fed as they are generated, and the reply
//! ends at `\n\nUser:` (which the state then already holds), at end of text, or on Ctrl-C.

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

pub struct ChatOptions {
    pub system: Option<String>,
    pub max_tokens: usize,
}

/// Where the transcript stands, so the next turn feeds exactly the missing text.
enum Tail {
    /// Nothing fed yet.
    Empty,
    /// The state ends with `\n\nUser:` (the reply stopped there).
    UserPrefix,
    /// The state ends elsewhere (end of text, max tokens, interrupted).
    Other,
}

pub fn run(
    engine: &mut Engine,
    tokenizer: &Tokenizer,
    options: &ChatOptions,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    interrupt: Arc<AtomicBool>,
) -> Result<()> {
    let mut tail = Tail::Empty;
    let reset = |engine: &mut Engine| -> Result<()> {
        engine.reset(SLOT)?;
        engine.reset_sampling(SLOT)?;
        Ok(())
    };
    reset(engine)?;
    if let Some(system) = &options.system {
        let tokens = tokenizer.encode(system.trim_end().as_bytes());
        if !tokens.is_empty() {
            feed(engine, SLOT, &tokens)?;
            tail = Tail::Other;
        }
    }
    writeln!(out, "chat: type a message; /reset, /save FILE, /load FILE, /quit")?;
    loop {
        write!(out, "\nUser: ")?;
        out.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match line.split_once(' ').map_or((line, ""), |(c, a)| (c, a.trim())) {
            ("/quit", _) | ("/exit", _) => break,
            ("/reset", _) => {
                reset(engine)?;
                tail = Tail::Empty;
                writeln!(out, "(conversation reset)")?;
                continue;
            }
            ("/save", path) if !path.is_empty() => {
                let state = engine.read_state(SLOT)?;
                state.save(Path::new(path), &engine.config)?;
                // The transcript's tail travels with the state only as text; a loaded state
                // continues as if the last reply ended normally.
                writeln!(out, "(state saved to {path})")?;
                continue;
            }
            ("/load", path) if !path.is_empty() => {
                match State::load(Path::new(path), &engine.config) {
                    Ok(state) => {
                        engine.write_state(SLOT, &state)?;
                        engine.reset_sampling(SLOT)?;
                        tail = Tail::Other;
                        writeln!(out, "(state loaded from {path})")?;
                    }
                    Err(e) => writeln!(out, "(could not load {path}: {e})")?,
                }
                continue;
            }
            (cmd, _) if cmd.starts_with('/') => {
                writeln!(out, "(unknown command {cmd}; /reset, /save FILE, /load FILE, /quit)")?;
                continue;
            }
            _ => {}
        }
        let text = match tail {
            Tail::Empty => format!("User: {line}\n\nAssistant:"),
            Tail::UserPrefix => format!(" {line}\n\nAssistant:"),
            Tail::Other => format!("{USER_PREFIX} {line}\n\nAssistant:"),
        };
        let tokens = tokenizer.encode(text.as_bytes());
        let started = Instant::now();
        let first = feed(engine, SLOT, &tokens)?;
        let prefill = started.elapsed();
        write!(out, "\nAssistant:")?;
        interrupt.store(false, Ordering::Relaxed);
        let g = Generation {
            max_tokens: options.max_tokens,
            stop: vec![USER_PREFIX.to_string()],
            feed_last: true,
            interrupt: &interrupt,
        };
        let (generated, decode, stop) = generate(engine, tokenizer, SLOT, first, &g, &mut |t| {
            out.write_all(t.as_bytes())?;
            out.flush()?;
            Ok(())
        })?;
        tail = match stop {
            StopReason::StopString(_) => Tail::UserPrefix,
            _ => Tail::Other,
        };
        if stop == StopReason::Interrupted {
            write!(out, " (stopped)")?;
        }
        writeln!(out)?;
        eprintln!(
            "[turn: fed {} tokens in {:.0} ms, generated {} tokens in {:.0} ms]",
            tokens.len(),
            prefill.as_secs_f64() * 1e3,
            generated,
            decode.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// Installs the Ctrl-C handler: it stops the current reply instead of the program.
pub fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    ctrlc::set_handler(move || f.store(true, Ordering::Relaxed)).context("installing the Ctrl-C handler")?;
    Ok(flag)
}

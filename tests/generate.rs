//! `generate` and `chat` end to end, through the built binary: greedy generation against
//! llama.cpp's greedy ids on the fixtures, seeded sampling, stop strings, prompts from files
//! and stdin, a scripted chat whose later turns feed only their own text, Ctrl-C, and the
//! one-line errors a user meets.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gguf::{GgufFile, GgufWriter, MetadataValue};
use rwkv_tokenizer::Tokenizer;

fn fixture(name: &str) -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures")).join(name);
    assert!(p.exists(), "missing fixture {}", p.display());
    p
}

fn fixture_str(name: &str) -> String {
    fixture(name).display().to_string()
}

fn read_ids(name: &str) -> Vec<u32> {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

fn tokenizer(model: &str) -> Tokenizer {
    Tokenizer::from_gguf(&GgufFile::open(fixture(model)).unwrap()).unwrap()
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rwkv-generate-{}-{name}", std::process::id()))
}

fn tool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_web-rwkv-gguf"))
}

fn run(args: &[&str]) -> Output {
    tool().args(args).output().expect("run the tool")
}

fn run_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = tool()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the tool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Our stderr lines, without what the Vulkan driver may print (lavapipe's WSI complains
/// about XDG_RUNTIME_DIR when it is unset).
fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .map(str::to_string)
        .collect()
}

fn ok(o: &Output) -> &Output {
    assert!(
        o.status.success(),
        "failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// An error is exactly one line on stderr with exit code 1.
fn one_line_error(o: &Output) -> String {
    let lines = stderr_lines(o);
    assert_eq!(o.status.code(), Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("error: "), "{lines:?}");
    lines[0].clone()
}

/// The prompt and generated ids a `generate --ids-out` run wrote.
fn ids_of(path: &PathBuf) -> (Vec<u32>, Vec<u32>) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids = |k: &str| serde_json::from_value::<Vec<u32>>(v[k].clone()).unwrap();
    (ids("prompt"), ids("generated"))
}

/// Greedy `generate` on the fixture's prompt (the text of its tokens): (prompt ids,
/// generated ids, stdout, stderr lines).
fn greedy(name: &str, max_tokens: usize) -> (Vec<u32>, Vec<u32>, String, Vec<String>) {
    let model = format!("{name}.gguf");
    let tok = tokenizer(&model);
    let prompt = String::from_utf8(
        tok.decode(&read_ids(&format!("expected/{name}.tokens.json")))
            .unwrap(),
    )
    .unwrap();
    let ids = temp(&format!("{name}-greedy.json"));
    let o = run(&[
        "generate",
        "--model",
        &fixture_str(&model),
        "--prompt",
        &prompt,
        "--max-tokens",
        &max_tokens.to_string(),
        "--temperature",
        "0",
        "--ids-out",
        &ids.display().to_string(),
    ]);
    ok(&o);
    let (p, g) = ids_of(&ids);
    std::fs::remove_file(&ids).ok();
    (
        p,
        g,
        String::from_utf8(o.stdout.clone()).unwrap(),
        stderr_lines(&o),
    )
}

#[test]
fn greedy_generate_reproduces_llama_cpp_on_f16() {
    let (prompt, generated, text, stderr) = greedy("mini-f16", 16);
    assert_eq!(prompt, read_ids("expected/mini-f16.tokens.json"));
    let expected = read_ids("expected/mini-f16.greedy.json");
    assert_eq!(generated, expected);
    // The streamed text is the text of those tokens (not a terminal: no newline added).
    let tok = tokenizer("mini-f16.gguf");
    assert_eq!(text, tok.decode_lossy(&expected).unwrap());
    // Load time, then the summary.
    assert!(
        stderr
            .iter()
            .any(|l| l.starts_with("loaded ") && l.contains(" s on ")),
        "{stderr:?}"
    );
    let summary = stderr.last().unwrap();
    assert!(
        summary.starts_with("prompt: 131 tokens, ")
            && summary.contains("tok/s | generated: 16 tokens, ")
            && summary.ends_with("| stop: max tokens"),
        "{summary}"
    );
}

#[test]
fn greedy_generate_on_quantized_fixtures_starts_like_llama_cpp() {
    // Random-weight models are chaotic: quantized logits move slightly and flip greedy picks
    // after a few tokens (llama.cpp's own decode path does too), so the first 4 must agree.
    for name in [
        "mini-bf16",
        "mini-q8_0",
        "mini-q6_k",
        "mini-q5_k_m",
        "mini-q5_1",
        "mini-q4_k_m",
        "mini-q4_1",
        "mini-q4_0",
        "mini-q3_k_m",
        "mini-q2_k",
        "vocab-q4_k_m",
    ] {
        let (prompt, generated, _, _) = greedy(name, 4);
        assert_eq!(prompt, read_ids(&format!("expected/{name}.tokens.json")));
        let expected = read_ids(&format!("expected/{name}.greedy.json"));
        assert_eq!(generated, expected[..4], "{name}");
    }
}

fn generate_ids(extra: &[&str]) -> Vec<u32> {
    let ids = temp(&format!(
        "ids-{}.json",
        extra.join("_").replace(['/', ' '], "")
    ));
    let model = fixture_str("mini-q4_k_m.gguf");
    let mut args = vec![
        "generate",
        "--model",
        &model,
        "--prompt",
        "Once upon a time",
        "--ids-out",
    ];
    let path = ids.display().to_string();
    args.push(&path);
    args.extend_from_slice(extra);
    ok(&run(&args));
    let (_, g) = ids_of(&ids);
    std::fs::remove_file(&ids).ok();
    g
}

#[test]
fn sampling_is_reproducible_by_seed() {
    let settings = [
        "--max-tokens",
        "12",
        "--temperature",
        "1.2",
        "--top-p",
        "1",
        "--presence-penalty",
        "0.5",
        "--frequency-penalty",
        "0.5",
        "--penalty-decay",
        "0.9",
    ];
    let with_seed = |seed: &str| {
        let mut a = settings.to_vec();
        a.extend_from_slice(&["--seed", seed]);
        generate_ids(&a)
    };
    let a = with_seed("7");
    assert_eq!(a.len(), 12);
    assert_eq!(a, with_seed("7"));
    assert_ne!(a, with_seed("8"));
    // Greedy ignores the seed; top-k 1 is greedy too.
    let g = generate_ids(&["--max-tokens", "6", "--temperature", "0", "--seed", "1"]);
    assert_eq!(
        g,
        generate_ids(&["--max-tokens", "6", "--temperature", "0", "--seed", "2"])
    );
    assert_eq!(
        g,
        generate_ids(&[
            "--max-tokens",
            "6",
            "--top-k",
            "1",
            "--seed",
            "3",
            "--min-p",
            "0.1"
        ])
    );
}

#[test]
fn stop_strings_end_the_text() {
    let (_, generated, full, _) = greedy("mini-f16", 16);
    let tok = tokenizer("mini-f16.gguf");
    assert_eq!(full, tok.decode_lossy(&generated).unwrap());
    // A stop string from the middle of the greedy text: the output is what precedes it.
    let chars: Vec<(usize, char)> = full.char_indices().collect();
    let (start, _) = chars[chars.len() / 2];
    let end = chars.get(chars.len() / 2 + 3).map_or(full.len(), |c| c.0);
    let stop = &full[start..end];
    let before = &full[..full.find(stop).unwrap()];
    let prompt = String::from_utf8(
        tok.decode(&read_ids("expected/mini-f16.tokens.json"))
            .unwrap(),
    )
    .unwrap();
    let o = run(&[
        "generate",
        "--model",
        &fixture_str("mini-f16.gguf"),
        "--prompt",
        &prompt,
        "--max-tokens",
        "16",
        "--temperature",
        "0",
        "--stop",
        "never appears \u{1}",
        "--stop",
        stop,
    ]);
    ok(&o);
    assert_eq!(String::from_utf8(o.stdout.clone()).unwrap(), before);
    let summary = stderr_lines(&o).pop().unwrap();
    assert!(
        summary.ends_with(&format!("stop: stop string {stop:?}")),
        "{summary}"
    );
}

#[test]
fn prompts_from_a_file_and_stdin() {
    let model = fixture_str("mini-q4_k_m.gguf");
    let prompt = "The fox said: 你好 🦊\n";
    let common = ["--max-tokens", "3", "--temperature", "0"];
    let ids = |o: &Output, path: &PathBuf| {
        ok(o);
        let r = ids_of(path);
        std::fs::remove_file(path).ok();
        r
    };
    let out1 = temp("p1.json");
    let mut a = vec!["generate", "--model", &model, "--prompt", prompt];
    let p1 = out1.display().to_string();
    a.extend_from_slice(&["--ids-out", &p1]);
    a.extend_from_slice(&common);
    let from_arg = ids(&run(&a), &out1);

    let file = temp("prompt.txt");
    std::fs::write(&file, prompt).unwrap();
    let out2 = temp("p2.json");
    let (f, p2) = (file.display().to_string(), out2.display().to_string());
    let mut a = vec!["generate", "--model", &model, "--prompt-file", &f];
    a.extend_from_slice(&["--ids-out", &p2]);
    a.extend_from_slice(&common);
    let from_file = ids(&run(&a), &out2);
    std::fs::remove_file(&file).ok();

    let out3 = temp("p3.json");
    let p3 = out3.display().to_string();
    let mut a = vec!["generate", "--model", &model, "--prompt-file", "-"];
    a.extend_from_slice(&["--ids-out", &p3]);
    a.extend_from_slice(&common);
    let from_stdin = ids(&run_with_stdin(&a, prompt), &out3);

    assert_eq!(
        from_arg.0,
        tokenizer("mini-q4_k_m.gguf").encode(prompt.as_bytes())
    );
    assert_eq!(from_arg, from_file);
    assert_eq!(from_arg, from_stdin);
}

/// A rewritten copy of mini-f16 with `change` applied to its metadata and tensors.
fn rewritten(
    name: &str,
    change: impl Fn(&str, &MetadataValue) -> MetadataValue,
    retype: Option<(&str, gguf::GgmlType, usize)>,
) -> PathBuf {
    let src = GgufFile::open(fixture("mini-f16.gguf")).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        w.metadata(k.clone(), change(k, v));
    }
    for t in src.tensors() {
        match retype {
            Some((n, ty, bytes)) if n == t.name => {
                w.tensor(t.name.clone(), &t.dims, ty, vec![0; bytes]);
            }
            _ => {
                w.tensor(t.name.clone(), &t.dims, t.ty, src.tensor_bytes(t).to_vec());
            }
        }
    }
    let path = temp(name);
    std::fs::write(&path, w.to_bytes()).unwrap();
    path
}

#[test]
fn errors_are_one_clear_line() {
    let model = fixture_str("mini-f16.gguf");
    let gen = |m: &str, extra: &[&str]| {
        let mut a = vec!["generate", "--model", m];
        a.extend_from_slice(extra);
        one_line_error(&run(&a))
    };
    // A missing file, a file that is not GGUF.
    let e = gen("/no/such/model.gguf", &["--prompt", "hi"]);
    assert!(
        e.contains("/no/such/model.gguf") && e.contains("No such file"),
        "{e}"
    );
    assert_eq!(e.matches("No such file").count(), 1, "{e}");
    let not_gguf = temp("not-gguf.bin");
    std::fs::write(&not_gguf, b"this is not a gguf file at all").unwrap();
    let e = gen(&not_gguf.display().to_string(), &["--prompt", "hi"]);
    std::fs::remove_file(&not_gguf).ok();
    assert!(e.contains("not a GGUF file"), "{e}");

    // Another architecture; a tensor type the GPU kernels do not compute with.
    let llama = rewritten(
        "llama.gguf",
        |k, v| {
            if k == "general.architecture" {
                MetadataValue::String("llama".into())
            } else {
                v.clone()
            }
        },
        None,
    );
    let e = gen(&llama.display().to_string(), &["--prompt", "hi"]);
    std::fs::remove_file(&llama).ok();
    assert!(e.contains("architecture \"llama\" is not supported"), "{e}");
    // 256x256 values of IQ2_XXS: 256 blocks of 66 bytes.
    let iq = rewritten(
        "iq2.gguf",
        |_, v| v.clone(),
        Some((
            "blk.0.time_mix_key.weight",
            gguf::GgmlType::IQ2_XXS,
            256 * 66,
        )),
    );
    let e = gen(&iq.display().to_string(), &["--prompt", "hi"]);
    std::fs::remove_file(&iq).ok();
    assert!(
        e.contains("blk.0.time_mix_key.weight") && e.contains("IQ2_XXS"),
        "{e}"
    );

    // Empty prompts, unreadable prompt files, bad sampling settings.
    let e = gen(&model, &["--prompt", ""]);
    assert!(e.contains("prompt is empty"), "{e}");
    let e = one_line_error(&run_with_stdin(
        &["generate", "--model", &model, "--prompt-file", "-"],
        "",
    ));
    assert!(e.contains("prompt is empty"), "{e}");
    let e = gen(&model, &["--prompt-file", "/no/such/prompt.txt"]);
    assert!(e.contains("/no/such/prompt.txt"), "{e}");
    let e = gen(&model, &["--prompt", "hi", "--top-p", "1.5"]);
    assert!(e.contains("--top-p 1.5"), "{e}");
    let e = gen(&model, &["--prompt", "hi", "--temperature", "-1"]);
    assert!(e.contains("--temperature -1"), "{e}");
    let e = gen(&model, &["--prompt", "hi", "--penalty-decay", "2"]);
    assert!(e.contains("--penalty-decay 2"), "{e}");

    // No usable GPU: Vulkan finds no driver; the error says how to install one.
    for command in [
        vec!["generate", "--model", &model, "--prompt", "hi"],
        vec!["chat", "--model", &model],
    ] {
        let o = tool()
            .args(&command)
            .env("VK_ICD_FILENAMES", "/no/such/icd.json")
            .env("VK_DRIVER_FILES", "/no/such/icd.json")
            .env("WGPU_BACKEND", "vulkan")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let e = one_line_error(&o);
        assert!(
            e.contains("no GPU adapter") && e.contains("apt-get install mesa-vulkan-drivers"),
            "{e}"
        );
    }
}

/// The `[turn: prompt N tokens, ... | reply M tokens, ... | stop: S]` lines of a chat.
fn turns(o: &Output) -> Vec<(usize, usize, String)> {
    stderr_lines(o)
        .iter()
        .filter_map(|l| l.strip_prefix("[turn: prompt "))
        .map(|l| {
            let prompt = l.split(' ').next().unwrap().parse().unwrap();
            let reply = l.split("| reply ").nth(1).unwrap();
            let reply = reply.split(' ').next().unwrap().parse().unwrap();
            let stop = l.split("| stop: ").nth(1).unwrap().trim_end_matches(']');
            (prompt, reply, stop.to_string())
        })
        .collect()
}

/// The assistant's replies on a chat's stdout.
fn replies(o: &Output) -> Vec<String> {
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    out.split("\nAssistant:")
        .skip(1)
        .map(|r| r.split("\n\nUser: ").next().unwrap().to_string())
        .collect()
}

/// The tokens a turn must feed after a reply that stopped with `stop`.
fn turn_tokens(tok: &Tokenizer, stop: &str, line: &str) -> usize {
    let text = if stop.starts_with("stop string") {
        format!(" {line}\n\nAssistant:")
    } else {
        format!("\n\nUser: {line}\n\nAssistant:")
    };
    tok.encode(text.as_bytes()).len()
}

#[test]
fn chat_keeps_the_state_between_turns() {
    let model = fixture_str("mini-q4_k_m.gguf");
    let tok = tokenizer("mini-q4_k_m.gguf");
    let state = temp("chat-state.safetensors");
    let state_s = state.display().to_string();
    let args = [
        "chat",
        "--model",
        &model,
        "--temperature",
        "0",
        "--max-tokens",
        "6",
    ];
    let first = "Hello there, who are you?";
    let second = "Tell me a story about the sea.";

    // Two turns with a save in between.
    let a = run_with_stdin(
        &args,
        &format!("{first}\n/save {state_s}\n{second}\n/quit\n"),
    );
    ok(&a);
    let t = turns(&a);
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!(
        t[0].0,
        tok.encode(format!("User: {first}\n\nAssistant:").as_bytes())
            .len()
    );
    // The second turn feeds only its own text, not the transcript before it.
    assert_eq!(t[1].0, turn_tokens(&tok, &t[0].2, second), "{t:?}");
    let r = replies(&a);
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(String::from_utf8_lossy(&a.stdout).contains("(state saved to"));

    // A new session loads the saved state and asks the same: the same reply, the same
    // number of tokens fed.
    let b = run_with_stdin(&args, &format!("/load {state_s}\n{second}\n/quit\n"));
    ok(&b);
    std::fs::remove_file(&state).ok();
    assert_eq!(turns(&b), t[1..], "loaded state");
    assert_eq!(replies(&b), r[1..]);

    // /reset starts over: the same first reply again, from the same tokens.
    let c = run_with_stdin(&args, &format!("{first}\n/reset\n{first}\n"));
    ok(&c);
    let tc = turns(&c);
    assert_eq!(tc, vec![t[0].clone(), t[0].clone()]);
    assert_eq!(replies(&c), vec![r[0].clone(), r[0].clone()]);
    assert!(String::from_utf8_lossy(&c.stdout).contains("(conversation reset)"));

    // A system text comes first; the first turn then starts a new paragraph.
    let mut with_system = args.to_vec();
    with_system.extend_from_slice(&["--system", "You are a kind assistant."]);
    let d = run_with_stdin(
        &with_system,
        &format!("{first}\n/bogus\n/load /no/such/state\n"),
    );
    ok(&d);
    let td = turns(&d);
    assert_eq!(
        td[0].0,
        tok.encode(format!("\n\nUser: {first}\n\nAssistant:").as_bytes())
            .len()
    );
    let out = String::from_utf8_lossy(&d.stdout);
    assert!(out.contains("(unknown command /bogus"), "{out}");
    assert!(out.contains("(could not load: "), "{out}");
}

/// Reads a child's stdout on a thread, so the test can wait for text with a deadline.
struct Stream {
    rx: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl Stream {
    fn new(mut r: impl Read + Send + 'static) -> Stream {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Stream {
            rx,
            seen: String::new(),
        }
    }

    /// Waits until the output holds `text` `count` times.
    fn wait_for(&mut self, text: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.seen.matches(text).count() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(b) => self.seen.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => panic!("no {text:?} in {:?}", self.seen),
            }
        }
    }
}

fn interrupt(child: &std::process::Child) {
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -INT");
}

#[test]
fn ctrl_c_stops_the_reply_not_the_chat() {
    let mut child = tool()
        .args([
            "chat",
            "--model",
            &fixture_str("mini-q4_k_m.gguf"),
            "--temperature",
            "0",
            "--max-tokens",
            "1000000",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = Stream::new(child.stdout.take().unwrap());
    let mut err = Stream::new(child.stderr.take().unwrap());
    out.wait_for("\nUser: ", 1);
    stdin.write_all(b"Hello\n").unwrap();
    out.wait_for("\nAssistant:", 1);
    // Let a few tokens stream, then stop the reply.
    std::thread::sleep(Duration::from_millis(300));
    interrupt(&child);
    out.wait_for(" (stopped)", 1);
    err.wait_for("| stop: interrupted]", 1);
    // The chat goes on: another turn gets a reply, again stopped by Ctrl-C.
    out.wait_for("\nUser: ", 2);
    stdin.write_all(b"Go on\n").unwrap();
    out.wait_for("\nAssistant:", 2);
    std::thread::sleep(Duration::from_millis(300));
    interrupt(&child);
    out.wait_for(" (stopped)", 2);
    out.wait_for("\nUser: ", 3);
    // Ctrl-C at the prompt ends the program.
    interrupt(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{}", out.seen);
}

//! `midge completions` and `midge man`: the bash and zsh scripts are valid and complete
//! subcommands; the man pages render with man(1) and name every subcommand.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use midge_testkit::peers::{installed, require};

fn midge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_midge"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("midge runs")
}

fn ok(out: Output) -> Vec<u8> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("midge-manual-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

const SUBCOMMANDS: [&str; 10] = [
    "broker",
    "pub",
    "sub",
    "rr",
    "bench",
    "passwd",
    "store",
    "ctl",
    "completions",
    "man",
];

#[test]
fn the_bash_script_is_valid_and_completes_subcommands_and_flags() {
    let script = String::from_utf8(ok(midge(&["completions", "bash"]))).expect("utf-8");
    for sub in SUBCOMMANDS {
        assert!(script.contains(sub), "{sub} missing from the bash script");
    }
    let dir = temp_dir("bash");
    let path = dir.join("midge.bash");
    std::fs::write(&path, &script).expect("write");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash runs");
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Loaded into bash, it completes as a user would see it at TAB.
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let program = format!(
            "source {path}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; \
             COMP_POINT={point}; _midge midge '{cur}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path = path.display(),
            words = words.join(" "),
            cword = words.len() - 1,
            point = line.len(),
            cur = words[words.len() - 1],
            prev = words[words.len() - 2],
        );
        let out = Command::new("bash")
            .args(["-c", &program])
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let subs = complete("midge b");
    assert_eq!(
        subs.lines().collect::<Vec<_>>(),
        ["broker", "bench"],
        "{subs}"
    );
    let flags = complete("midge rr --resp");
    assert_eq!(flags.trim(), "--response-topic", "{flags}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_shell_gets_a_script_and_an_unknown_one_is_refused() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = String::from_utf8(ok(midge(&["completions", shell]))).expect("utf-8");
        assert!(
            script.contains("midge") && script.contains("response-topic"),
            "{shell}"
        );
    }
    let out = midge(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Drives an interactive zsh on a pseudo-terminal (zsh/zpty) with the completion script in
/// its `fpath`: types `$2`, a TAB, and prints what the terminal shows once `$3` appears (or
/// after 10 s).
const ZSH_DRIVER: &str = r#"
zmodload zsh/zpty || exit 3
zpty z zsh -f -i
zpty -w z "PS1='> '; fpath=($1 \$fpath); autoload -U compinit; compinit -u -D; bindkey '^I' complete-word; midge() { :; }"
zpty -w -n z "$2"$'\t'
out=''
for i in {1..50}; do
  while zpty -r -t z chunk; do out+=$chunk; done
  [[ $out == *"$3"* ]] && break
  sleep 0.2
done
print -r -- "$out"
zpty -d z
"#;

#[test]
fn the_zsh_script_is_valid_and_completes_subcommands_and_flags() {
    if !require(
        "zsh (Debian package zsh)",
        installed("zsh", &["-c", "true"]),
    ) {
        return;
    }
    let dir = temp_dir("zsh");
    let path = dir.join("_midge");
    std::fs::write(&path, ok(midge(&["completions", "zsh"]))).expect("write");
    let check = Command::new("zsh")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("zsh runs");
    assert!(
        check.status.success(),
        "zsh -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Loaded by compinit, it completes at TAB as a user would see it.
    for (line, expected) in [
        ("midge deco", "midge decode"),
        ("midge pub --tls-v", "midge pub --tls-version"),
        ("midge sub --retained-o", "midge sub --retained-only"),
        ("midge decode --form", "midge decode --format"),
    ] {
        let out = Command::new("zsh")
            .args(["-f", "-c", ZSH_DRIVER, "zsh"])
            .arg(&dir)
            .args([line, expected])
            .stdin(Stdio::null())
            .output()
            .expect("zsh runs");
        let screen = String::from_utf8_lossy(&out.stdout);
        assert!(
            screen.contains(expected),
            "{line:?} + TAB: {screen:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A page as man(1) shows it, or `None` after a loud skip (or a failure under
/// `MIDGE_REQUIRE_PEERS=1`) when man is not installed.
fn rendered(path: &std::path::Path) -> Option<String> {
    if !require("man (Debian package man-db)", installed("man", &["-w"])) {
        return None;
    }
    let out = Command::new("man")
        .arg("-l")
        .arg(path)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("man runs");
    assert!(
        out.status.success(),
        "man -l {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn man_pages_render_and_name_the_subcommands() {
    let page = String::from_utf8(ok(midge(&["man"]))).expect("utf-8");
    assert!(
        page.contains(".TH midge 1") && page.contains(".SH NAME"),
        "{page}"
    );
    let dir = temp_dir("man");
    let path = dir.join("midge.1");
    std::fs::write(&path, &page).expect("write");
    if let Some(text) = rendered(&path) {
        assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
        for sub in SUBCOMMANDS {
            assert!(text.contains(&format!("midge-{sub}(1)")), "{sub}: {text}");
        }
    }
    // One subcommand's page, and a nested one.
    let rr = String::from_utf8(ok(midge(&["man", "rr"]))).expect("utf-8");
    assert!(rr.contains(".TH midge-rr 1"), "{rr}");
    // The footer names midge, not the subcommand alone.
    let source = format!("\"midge {}\"", env!("CARGO_PKG_VERSION"));
    assert!(rr.contains(&source), "{rr}");
    let path = dir.join("midge-rr.1");
    std::fs::write(&path, &rr).expect("write");
    if let Some(text) = rendered(&path) {
        assert!(text.contains("--response-topic"), "{text}");
        assert!(text.contains("Exit codes"), "{text}");
    }
    let fanout = String::from_utf8(ok(midge(&["man", "bench", "fanout"]))).expect("utf-8");
    assert!(fanout.contains(".TH midge-bench-fanout 1"), "{fanout}");
    let out = midge(&["man", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no subcommand \"nosuch\""));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn man_out_writes_a_page_for_every_subcommand() {
    let dir = temp_dir("out").join("man1");
    ok(midge(&["man", "--out", dir.to_str().expect("utf-8")]));
    for page in [
        "midge.1",
        "midge-rr.1",
        "midge-store-info.1",
        "midge-bench-pub.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).expect(page);
        assert!(text.contains(".TH "), "{page}");
    }
    for clap_help in ["midge-help.1", "midge-bench-help.1"] {
        assert!(!dir.join(clap_help).exists(), "{clap_help}");
    }
    if let Some(text) = rendered(&dir.join("midge-store.1")) {
        assert!(text.contains("midge-store-info(1)"), "{text}");
    }
    let _ = std::fs::remove_dir_all(dir.parent().expect("parent"));
}

//! Recorded `bpfgate check` and `bpfgate policy` runs (`tests/policy/cli/NAME.{args,stdout,stderr,status}`),
//! replayed against the current binary. `BLESS=1` re-records them after an intended change.

use crate::support::{bpfgate, files_with, repo};

#[test]
fn recorded_policy_runs_replay_identically() {
    let dir = repo().join("tests/policy/cli");
    let bless = std::env::var_os("BLESS").is_some();
    let cases = files_with(&dir, &[".args"]);
    assert!(cases.len() >= 10, "recorded runs missing under {}", dir.display());
    let mut failures = Vec::new();
    for args_file in cases {
        let text = std::fs::read_to_string(&args_file).expect("args readable");
        let args: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        let out = bpfgate(&args);
        let got = [
            ("stdout", String::from_utf8_lossy(&out.stdout).into_owned()),
            ("stderr", String::from_utf8_lossy(&out.stderr).into_owned()),
            ("status", format!("{}\n", out.status.code().unwrap_or(-1))),
        ];
        for (ext, content) in got {
            let path = args_file.with_extension(ext);
            if bless {
                std::fs::write(&path, &content).expect("recording written");
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
                failures.push(format!("{}: {ext} differs; got:\n{content}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

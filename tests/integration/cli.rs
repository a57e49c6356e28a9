//! The `bpfgate` command line: formats, JSON Lines, exit codes and error messages.

use bpfgate::metadata::{from_cbor, ObjectReport};

use crate::support::bpfgate;

const OBJ: &str = "tests/fixtures/kprobe_read.bpf.o";
const OBJ2: &str = "tests/fixtures/send_signal.bpf.o";

#[test]
fn inspect_json_one_file_is_one_object() {
    let out = bpfgate(&["inspect", "--format", "json", OBJ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["file"], OBJ);
    let prog = &v["programs"][0];
    for key in ["name", "section", "prog_type", "insn_count", "helpers", "kfuncs", "maps", "capabilities", "evidence"] {
        assert!(prog.get(key).is_some(), "program lacks {key}: {prog}");
    }
    assert!(v["errors"].as_array().is_some_and(std::vec::Vec::is_empty));
}

#[test]
fn inspect_json_several_files_is_json_lines_in_order() {
    let out = bpfgate(&["inspect", "--format", "json", OBJ, OBJ2, OBJ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let files: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("each line is JSON")["file"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(files, [OBJ, OBJ2, OBJ]);
}

#[test]
fn inspect_cbor_decodes_to_the_json_report() {
    let cbor = bpfgate(&["inspect", "--format", "cbor", OBJ]);
    let json = bpfgate(&["inspect", "--format", "json", OBJ]);
    let a: ObjectReport = from_cbor(&cbor.stdout).expect("CBOR report");
    let b: ObjectReport = serde_json::from_slice(&json.stdout).expect("JSON report");
    assert_eq!(a, b);
}

#[test]
fn inspect_text_names_capabilities_with_their_instruction() {
    let out = bpfgate(&["inspect", OBJ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.contains("kernel_read"), "{text}");
    assert!(text.contains("call bpf_probe_read_kernel#113"), "{text}");
}

#[test]
fn inspect_errors_exit_2_and_name_the_file() {
    let missing = bpfgate(&["inspect", "--format", "json", "no/such/file.o"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no/such/file.o"));

    let not_elf = bpfgate(&["inspect", "--format", "json", "Cargo.toml"]);
    assert_eq!(not_elf.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&not_elf.stderr);
    assert!(stderr.contains("Cargo.toml") && stderr.contains("not a valid ELF"), "{stderr}");

    // A good file next to a bad one is still reported, and the run still fails.
    let mixed = bpfgate(&["inspect", "--format", "json", OBJ, "Cargo.toml"]);
    assert_eq!(mixed.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&mixed.stdout).lines().count(), 2);
}

/// `enforce --stop` only removes pins (no BPF syscall), so it runs on any host: with nothing persisted it
/// says so and succeeds; with pins it removes them and the directory.
#[test]
fn enforce_stop_removes_pins_and_is_idempotent() {
    let dir = std::env::temp_dir().join(format!("bpfgate-stop-test-{}", std::process::id()));
    let out = bpfgate(&["enforce", "--stop", "--pin-dir", dir.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no persisted gate"));
    std::fs::create_dir(&dir).expect("pin dir");
    std::fs::write(dir.join("link_bpf_prog_load"), b"").expect("a stand-in pin");
    let out = bpfgate(&["enforce", "--stop", "--pin-dir", dir.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("removed 1 pins"));
    assert!(!dir.exists());
}

#[test]
fn enforce_needs_a_policy_and_refuses_stop_with_one() {
    let out = bpfgate(&["enforce"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--policy"));
    let out = bpfgate(&["enforce", "--stop", "--policy", "p.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let out = bpfgate(&["enforce", "--stop", "--persist"]);
    assert_eq!(out.status.code(), Some(2));
}

const RUNQLAT: &str = "corpus/embedded/libbpf-tools/runqlat.0.o";
const MOUNTSNOOP: &str = "corpus/embedded/libbpf-tools/mountsnoop.0.o";
const BTF_612: &str = "tests/fixtures/btf/libbpf-tools-6.12.min.btf";

/// Without `--btf`, a CO-RE object's report says it was judged as compiled; with it, what libbpf poisons on that
/// kernel (runqlat's `task_struct___o.state`, behind `bpf_core_field_exists`, is gone since 5.14).
#[test]
fn inspect_btf_reports_the_load_rewrites() {
    let out = bpfgate(&["inspect", "--format", "json", RUNQLAT]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["load_rewrites"], serde_json::json!({"core_relocations": 21, "target_btf": false}));
    let text = bpfgate(&["inspect", RUNQLAT]);
    assert!(String::from_utf8_lossy(&text.stdout)
        .contains("21 CO-RE relocations judged as compiled: libbpf rewrites them at load"));

    let out = bpfgate(&["inspect", "--format", "json", "--btf", BTF_612, RUNQLAT]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        v["load_rewrites"],
        serde_json::json!({"core_relocations": 21, "target_btf": true, "poisoned": [{
            "section": ".text", "insn": 23, "reason": "core_relocation",
            "what": "<byte_off> struct task_struct___o.state (0:0)"}]})
    );
    // The text report disassembles the rewritten code.
    let text = String::from_utf8_lossy(&bpfgate(&["inspect", "--btf", BTF_612, RUNQLAT]).stdout).into_owned();
    assert!(text.contains("instructions the loader poisons"), "{text}");

    let bad = bpfgate(&["inspect", "--btf", RUNQLAT, RUNQLAT]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not valid raw BTF"), "{bad:?}");
}

#[test]
fn check_no_create_poisons_the_map() {
    let out = bpfgate(&[
        "check",
        "--format",
        "json",
        "--policy",
        "examples/policies/observability.yaml",
        "--no-create",
        "heap",
        MOUNTSNOOP,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rw = &v["files"][0]["load_rewrites"];
    assert_eq!(rw["not_created"], serde_json::json!(["heap"]));
    let poisoned = rw["poisoned"].as_array().expect("poisoned");
    assert!(!poisoned.is_empty());
    assert!(poisoned.iter().all(|p| p["reason"] == "map_not_created" && p["what"] == "heap"), "{rw}");
}

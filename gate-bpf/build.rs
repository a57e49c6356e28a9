//! Compiles the BPF C sources under src/bpf/ and generates their libbpf-rs skeletons into
//! OUT_DIR, the libbpf-rs-examples way.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

/// Every BPF program of this crate, by source stem (src/bpf/STEM.bpf.c).
const PROGRAMS: &[&str] = &[
    // Test-only: used by tests/live.rs to prove the live-kernel harness.
    "smoke",
];

fn main() {
    let out_dir = match env::var_os("OUT_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            eprintln!("OUT_DIR is not set; build.rs must run under cargo");
            std::process::exit(1);
        }
    };
    println!("cargo:rerun-if-changed=src/bpf/vmlinux.h");
    for stem in PROGRAMS {
        let src = format!("src/bpf/{stem}.bpf.c");
        let skel = out_dir.join(format!("{stem}.skel.rs"));
        println!("cargo:rerun-if-changed={src}");
        if let Err(err) = SkeletonBuilder::new()
            .source(&src)
            // Our hand-written CO-RE header lives next to the sources.
            .clang_args(["-Isrc/bpf", "-Wall", "-Werror"])
            .build_and_generate(&skel)
        {
            // Show the whole chain: the clang diagnostics are in the causes.
            eprintln!("failed to build BPF program {src}: {err:#}");
            std::process::exit(1);
        }
    }
}

//! Link settings for the `bpfgate` binary. Start-up is a large part of a short `bpfgate inspect`, and most of it
//! is the dynamic loader's work (docs/benchmarks.md, "Where the time goes").

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let gnu_linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if !gnu_linux {
        return;
    }
    // Relative relocations packed (DT_RELR, glibc 2.36+): about 1 KiB for the loader to read instead of 70 KiB.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    // The unwinder from the compiler's libgcc_eh.a, linked in, so that libgcc_s.so is not one more shared library
    // to load at every start (the `--as-needed` link then drops it). Without a libgcc_eh.a, libgcc_s stays.
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".into());
    let Ok(out) = Command::new(linker).arg("-print-file-name=libgcc_eh.a").output() else { return };
    let archive = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if let Some(dir) = Path::new(&archive).parent().filter(|d| d.is_absolute() && Path::new(&archive).is_file()) {
        println!("cargo:rustc-link-search=native={}", dir.display());
        // Whole archive: it comes before std's code on the link line, so only a whole archive is sure to be used.
        println!("cargo:rustc-link-lib=static:+whole-archive,-bundle=gcc_eh");
    }
}

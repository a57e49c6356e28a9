//! Renders the helper and kfunc catalogue (`catalogue/*.tsv`, via the `bpfgate-catalogue` crate) into
//! `$OUT_DIR/catalogue.rs`, which `src/helpers.rs` includes.

use std::error::Error;
use std::path::PathBuf;
use std::{env, fs};

fn main() -> Result<(), Box<dyn Error>> {
    // The catalogue crate embeds the files, so editing them rebuilds it; these lines say so explicitly.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../catalogue/helpers.tsv");
    println!("cargo:rerun-if-changed=../catalogue/kfuncs.tsv");
    let source = bpfgate_catalogue::rust_source()?;
    let out = PathBuf::from(env::var("OUT_DIR")?).join("catalogue.rs");
    fs::write(out, source)?;
    Ok(())
}

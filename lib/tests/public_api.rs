//! The public API snapshot: every public item of `bpfgate` with its declaration, and every method and trait
//! impl header, as rustdoc renders them, compared with `lib/tests/public-api.txt`. A change to the public API
//! fails this test until the snapshot is updated with it, so API changes are deliberate.
//!
//! Runs on stable: `cargo doc -p bpfgate --no-deps` into `target/public-api` (its own target directory: the one
//! `cargo test` runs from is locked while it runs), then reads the HTML. Auto-trait and blanket impls are left
//! out (they follow from the rest), and so is the hidden `bpfgate::unstable`, which promises nothing.
//!
//! To accept a change: `BLESS=1 cargo test -p bpfgate --test public_api`, and review the diff of the snapshot.
//! The HTML is rustdoc's, so a new toolchain may reword it: bless and check the diff is only wording.

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn public_api_matches_the_snapshot() {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = lib.join("../target/public-api");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["doc", "-p", "bpfgate", "--no-deps", "--locked", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTDOCFLAGS")
        .current_dir(lib)
        .output()
        .expect("running cargo doc");
    assert!(out.status.success(), "cargo doc failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let doc = target.join("doc/bpfgate");
    let mut pages = Vec::new();
    html_files(&doc, &mut pages);
    pages.sort();
    let mut api = Vec::new();
    for page in &pages {
        let html = std::fs::read_to_string(page).expect("reading a rustdoc page");
        let rel = page.strip_prefix(&doc).expect("under the doc directory");
        api.extend(page_api(rel, &html));
    }
    api.sort();
    api.dedup();
    let actual = api.join("\n") + "\n";
    let snapshot = lib.join("tests/public-api.txt");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&snapshot, &actual).expect("writing the snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&snapshot).unwrap_or_default();
    if expected != actual {
        let (old, new): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
        let gone: Vec<_> = old.iter().filter(|l| !new.contains(l)).map(|l| format!("- {l}")).collect();
        let added: Vec<_> = new.iter().filter(|l| !old.contains(l)).map(|l| format!("+ {l}")).collect();
        panic!(
            "the public API differs from lib/tests/public-api.txt (BLESS=1 to accept, see this file's header):\n{}\n{}",
            gone.join("\n"),
            added.join("\n")
        );
    }
}

fn html_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            html_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "html") && p.file_name().is_some_and(|n| n != "all.html") {
            out.push(p);
        }
    }
}

/// The API lines of one page: `path: declaration`, `path: re-export`, `path: method or impl header`.
fn page_api(rel: &Path, html: &str) -> Vec<String> {
    // Re-exports elsewhere leave redirect pages.
    if html.contains("http-equiv=\"refresh\"") {
        return Vec::new();
    }
    let mut path: Vec<String> = vec!["bpfgate".into()];
    path.extend(rel.parent().into_iter().flat_map(|p| p.iter()).map(|c| c.to_string_lossy().into_owned()));
    let file = rel.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    if let Some(name) = file.strip_suffix(".html").and_then(|f| f.split_once('.')).map(|(_, n)| n) {
        path.push(name.to_owned());
    }
    let path = path.join("::");
    // Auto-trait and blanket impls follow from the rest.
    let html = html.split("id=\"synthetic-implementations\"").next().unwrap_or(html);
    let mut lines = Vec::new();
    let mut add = |open: &str, close: &str| {
        for text in between(html, open, close) {
            lines.push(format!("{path}: {}", text_of(text)));
        }
    };
    add("<pre class=\"rust item-decl\"><code>", "</code></pre>");
    add("<h3 class=\"code-header\">", "</h3>");
    add("<h4 class=\"code-header\">", "</h4>");
    for reexport in between(html, "<dt id=\"reexport.", "</dt>") {
        let code = reexport.split_once('>').map_or("", |(_, rest)| rest);
        lines.push(format!("{path}: {}", text_of(code)));
    }
    lines
}

/// Every piece of `s` between `open` and the next `close`.
fn between<'a>(s: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(close) else { break };
        out.push(&rest[..j]);
        rest = &rest[j + close.len()..];
    }
    out
}

/// The text of an HTML fragment: tags and "Show N fields" toggles dropped, entities decoded, whitespace collapsed.
fn text_of(html: &str) -> String {
    let mut text = String::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        text.push_str(&rest[..i]);
        rest = &rest[i..];
        let skip = if rest.starts_with("<summary") { rest.find("</summary>").map(|j| j + 10) } else { None };
        let end = skip.or_else(|| rest.find('>').map(|j| j + 1)).unwrap_or(rest.len());
        rest = &rest[end..];
    }
    text.push_str(rest);
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

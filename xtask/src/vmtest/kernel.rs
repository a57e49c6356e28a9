//! Fetching Debian's cloud kernels with a private apt configuration.
//!
//! apt runs with APT_CONFIG pointing at a config file of ours that redirects every directory
//! (sources, parts, state, cache, keyrings) under the cache dir, so the machine's apt setup is
//! neither read nor changed. Release files are still verified with Debian's archive keyring.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// One entry of the kernel matrix.
pub struct KernelSpec {
    /// Name used on the command line and in reports.
    pub label: &'static str,
    /// Suites to try in order; the first that has a matching kernel wins.
    suites: &'static [&'static str],
    select: Select,
    /// Part of `--kernel all` (what CI runs); otherwise only booted when named.
    pub in_all: bool,
}

enum Select {
    /// Newest `linux-image-<prefix>N...-cloud-amd64` (pins a kernel series).
    Series(&'static str),
    /// Whatever the suite's `linux-image-cloud-amd64` metapackage depends on (newest).
    Meta,
}

pub const MATRIX: &[KernelSpec] = &[
    KernelSpec {
        label: "6.12",
        // bookworm-backports carries 6.12 (the kernel the prototype was measured on); trixie
        // also does, under other package names, should backports move on.
        suites: &["bookworm-backports", "trixie"],
        select: Select::Series("6.12."),
        in_all: true,
    },
    KernelSpec { label: "sid", suites: &["sid"], select: Select::Meta, in_all: true },
    // Debian bookworm's own kernel (6.1, before security_bpf_prog_load): the gate scans at fentry/bpf_check there
    // (issue 16; gate-bpf/README.md, "Kernel reach").
    KernelSpec { label: "6.1", suites: &["bookworm"], select: Select::Meta, in_all: true },
];

/// The modules each guest loads at boot, with what they need: their kfuncs (conntrack lookups, NAT) are
/// what the gate must resolve through module BTF; the clsact qdisc and the bpf classifier are what
/// `tc filter add ... bpf` attaches with (tests/live/clients.rs).
const GUEST_MODULES: &[&str] = &["nf_conntrack", "nf_nat", "sch_ingress", "cls_bpf"];

/// The cache directory of a kernel's extracted GUEST_MODULES: named by the set, so that a changed set is
/// extracted beside the old one rather than over a directory other checkouts may be booting from.
fn modules_subdir() -> String {
    if GUEST_MODULES == ["nf_conntrack", "nf_nat"] {
        "modules".into()
    } else {
        format!("modules-{}", GUEST_MODULES.join("+"))
    }
}

/// A kernel image ready to boot.
pub struct Kernel {
    pub label: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/RELEASE/` holding GUEST_MODULES and their dependencies, decompressed, and `load-order`;
    /// None for a local kernel image.
    pub modules: Option<PathBuf>,
    /// Package and version it came from, for reports.
    pub origin: String,
}

/// A kernel given as a file on the command line (e.g. a self-built bzImage).
pub fn local(path: &Path) -> Result<Kernel> {
    if !path.is_file() {
        bail!("kernel image {} does not exist", path.display());
    }
    Ok(Kernel {
        label: path.file_name().map_or("local".into(), |n| n.to_string_lossy().into_owned()),
        vmlinuz: path.to_path_buf(),
        modules: None,
        origin: format!("local file {}", path.display()),
    })
}

/// Fetches (or reuses from the cache) the newest kernel for `spec`. When the network or apt
/// fails and a kernel for this label was cached before, that one is used with a warning.
pub fn fetch(spec: &KernelSpec, cache: &Path) -> Result<Kernel> {
    let current = cache.join("kernels").join(format!("{}.current", spec.label));
    match fetch_newest(spec, cache) {
        Ok(kernel) => {
            let dir = kernel.vmlinuz.parent().unwrap_or(cache);
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
            fs::write(&current, name.unwrap_or_default()).with_context(|| format!("writing {}", current.display()))?;
            Ok(kernel)
        }
        Err(err) => {
            let cached = fs::read_to_string(&current)
                .ok()
                .map(|name| cache.join("kernels").join(name.trim()))
                .filter(|dir| dir.join("vmlinuz").is_file());
            match cached {
                Some(dir) => {
                    eprintln!(
                        "vmtest: warning: could not refresh the {} kernel ({err:#}); using the cached {}",
                        spec.label,
                        dir.display()
                    );
                    Ok(Kernel {
                        label: spec.label.into(),
                        vmlinuz: dir.join("vmlinuz"),
                        modules: modules_dir(&dir),
                        origin: dir.file_name().map_or(String::new(), |n| n.to_string_lossy().into()),
                    })
                }
                None => Err(err.context(format!("cannot get the {} kernel", spec.label))),
            }
        }
    }
}

fn fetch_newest(spec: &KernelSpec, cache: &Path) -> Result<Kernel> {
    let mirror = host_mirror();
    let mut misses = Vec::new();
    for suite in spec.suites {
        let apt = PrivateApt::new(cache, &mirror, suite)?;
        apt.update()?;
        let Some(image) = apt.pick_image(&spec.select)? else {
            misses.push(format!("{suite}: no matching linux-image package"));
            continue;
        };
        let (package, version) = apt.package_with_vmlinuz(&image)?;
        let dir = cache.join("kernels").join(format!("{package}_{version}"));
        let vmlinuz = dir.join("vmlinuz");
        if !vmlinuz.is_file() {
            eprintln!("vmtest: downloading {package} {version} from {mirror} {suite}");
            apt.download_vmlinuz(&package, &dir)?;
        }
        if modules_dir(&dir).is_none() {
            // Newer packaging ships the modules in linux-modules-*, older in the image package itself.
            let holder =
                apt.depends(&image)?.into_iter().find(|d| d.starts_with("linux-modules-")).unwrap_or(image.clone());
            eprintln!("vmtest: extracting {} from {holder}", GUEST_MODULES.join(", "));
            apt.download_modules(&holder, &dir)?;
        }
        let modules = modules_dir(&dir);
        return Ok(Kernel {
            label: spec.label.into(),
            vmlinuz,
            modules,
            origin: format!("{package} {version} ({suite})"),
        });
    }
    bail!("no kernel found for {}: {}", spec.label, misses.join("; "))
}

/// The Debian mirror this machine's apt uses (so proxies and firewalls that allow it allow us),
/// overridable with BPFGATE_VMTEST_MIRROR.
fn host_mirror() -> String {
    if let Ok(mirror) = std::env::var("BPFGATE_VMTEST_MIRROR") {
        return mirror.trim_end_matches('/').to_string();
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut parts: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        parts.sort();
        files.extend(parts);
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else { continue };
        for line in text.lines().map(str::trim) {
            // deb822 ("URIs: a b") and one-line ("deb [opts] uri suite comp") forms.
            let uris: Vec<&str> = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().collect()
            } else if line.starts_with("deb ") {
                line.split_whitespace().filter(|w| w.contains("://")).take(1).collect()
            } else {
                continue;
            };
            if let Some(uri) = uris.into_iter().find(|u| u.trim_end_matches('/').ends_with("/debian")) {
                return uri.trim_end_matches('/').to_string();
            }
        }
    }
    DEFAULT_MIRROR.to_string()
}

struct PrivateApt {
    root: PathBuf,
    config: PathBuf,
}

impl PrivateApt {
    fn new(cache: &Path, mirror: &str, suite: &str) -> Result<Self> {
        let root = cache.join("apt").join(suite);
        let empty = root.join("empty");
        for dir in [&empty, &root.join("state/lists/partial"), &root.join("cache/archives/partial")] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if !Path::new(KEYRING).is_file() {
            bail!("{KEYRING} is missing: install debian-archive-keyring");
        }
        let status = root.join("state/status");
        if !status.exists() {
            fs::write(&status, "").with_context(|| format!("creating {}", status.display()))?;
        }
        let sources = root.join("sources.list");
        fs::write(&sources, format!("deb [signed-by={KEYRING}] {mirror} {suite} main\n"))
            .with_context(|| format!("writing {}", sources.display()))?;
        let q = |p: &Path| p.display().to_string();
        let mut conf = format!(
            r#"// Generated by cargo xtask vmtest: a private apt, independent of /etc/apt.
Dir::Etc::Main "/dev/null";
Dir::Etc::Parts "{empty}";
Dir::Etc::SourceList "{sources}";
Dir::Etc::SourceParts "{empty}";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "{empty}";
Dir::Etc::Trusted "/dev/null";
Dir::Etc::TrustedParts "{empty}";
Dir::State "{state}";
Dir::State::status "{status}";
Dir::Cache "{cache}";
Dir::Log "{root}";
Acquire::Languages "none";
// Keep indexes compressed and skip the unused source cache: a smaller cache dir for CI.
Acquire::GzipIndexes "true";
Acquire::CompressionTypes::Order:: "gz";
Dir::Cache::srcpkgcache "";
Acquire::Retries "3";
Acquire::http::Timeout "30";
// Signatures are still checked; only expiry is not, because build machines' clocks
// (this one's included) can be far off.
Acquire::Check-Valid-Until "false";
Acquire::Check-Date "false";
APT::Get::Assume-Yes "true";
"#,
            empty = q(&empty),
            sources = q(&sources),
            state = q(&root.join("state")),
            status = q(&status),
            cache = q(&root.join("cache")),
            root = q(&root),
        );
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // apt would drop to the _apt user, which cannot write into our cache dir.
            conf.push_str("APT::Sandbox::User \"root\";\n");
        }
        let config = root.join("apt.conf");
        fs::write(&config, conf).with_context(|| format!("writing {}", config.display()))?;
        Ok(Self { root, config })
    }

    fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("APT_CONFIG", &self.config).env("LC_ALL", "C");
        cmd
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<String> {
        let out = cmd.output().with_context(|| format!("running {what} (is apt installed?)"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // apt-get update exits 0 on some fetch failures but reports them as "E:"/"W:" lines.
        let failed =
            !out.status.success() || stderr.lines().any(|l| l.starts_with("E:") || l.starts_with("W: Failed to fetch"));
        if failed {
            bail!("{what} failed ({}):\n{}", out.status, stderr.trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn update(&self) -> Result<()> {
        let mut cmd = self.cmd("apt-get");
        cmd.args(["-q", "update"]);
        self.run(cmd, "apt-get update (private config)").map(drop)
    }

    fn pick_image(&self, select: &Select) -> Result<Option<String>> {
        match select {
            Select::Series(series) => {
                let prefix = format!("linux-image-{series}");
                let mut cmd = self.cmd("apt-cache");
                cmd.args(["pkgnames", &prefix]);
                let names = self.run(cmd, "apt-cache pkgnames")?;
                // linux-image-6.12.95+deb12-cloud-amd64, not its -dbg/-unsigned siblings.
                Ok(names
                    .lines()
                    .map(str::trim)
                    .filter(|n| {
                        n.strip_prefix(&prefix)
                            .and_then(|rest| rest.strip_suffix("-cloud-amd64"))
                            .is_some_and(|ver| !ver.is_empty() && !ver.contains('-'))
                    })
                    .max_by(|a, b| natural_cmp(a, b))
                    .map(str::to_string))
            }
            Select::Meta => {
                let deps = self.depends("linux-image-cloud-amd64")?;
                Ok(deps.into_iter().find(|d| {
                    d.starts_with("linux-image-") && d.ends_with("-cloud-amd64") && d != "linux-image-cloud-amd64"
                }))
            }
        }
    }

    /// Package names in the Depends field of the candidate version of `package`.
    fn depends(&self, package: &str) -> Result<Vec<String>> {
        Ok(self
            .field(package, "Depends")?
            .split([',', '|'])
            .filter_map(|d| d.split_whitespace().next())
            .map(str::to_string)
            .collect())
    }

    fn field(&self, package: &str, field: &str) -> Result<String> {
        let mut cmd = self.cmd("apt-cache");
        cmd.args(["show", "--no-all-versions", package]);
        let text = self.run(cmd, &format!("apt-cache show {package}"))?;
        let key = format!("{field}:");
        Ok(text.lines().find_map(|l| l.strip_prefix(&key)).map(|v| v.trim().to_string()).unwrap_or_default())
    }

    /// Since Debian's 6.17-ish packaging, linux-image-* is a metapackage and the vmlinuz lives
    /// in linux-binary-*; older ones carry it themselves.
    fn package_with_vmlinuz(&self, image: &str) -> Result<(String, String)> {
        let package = self
            .depends(image)?
            .into_iter()
            .find(|d| d.starts_with("linux-binary-"))
            .unwrap_or_else(|| image.to_string());
        let version = self.field(&package, "Version")?;
        if version.is_empty() {
            bail!("apt-cache show {package} has no Version");
        }
        Ok((package, version))
    }

    /// Downloads `package` and unpacks it into a fresh work directory; returns the directory and its tree.
    fn unpack(&self, package: &str) -> Result<(PathBuf, PathBuf)> {
        let work = self.root.join("download");
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let mut cmd = self.cmd("apt-get");
        cmd.args(["-q", "download", package]).current_dir(&work);
        self.run(cmd, &format!("apt-get download {package}"))?;
        let deb = fs::read_dir(&work)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| format!("apt-get download {package} left no .deb"))?;
        let tree = work.join("tree");
        let out = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&tree)
            .output()
            .context("running dpkg-deb (is dpkg installed?)")?;
        if !out.status.success() {
            bail!("dpkg-deb -x {} failed: {}", deb.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok((work, tree))
    }

    /// GUEST_MODULES and what they depend on, from `package`, decompressed into `dest/modules/RELEASE/`
    /// with a `load-order` file (dependencies first).
    fn download_modules(&self, package: &str, dest: &Path) -> Result<()> {
        let (work, tree) = self.unpack(package)?;
        let (release, files) = module_files(&tree)?;
        let staging = dest.join(format!("{}.partial", modules_subdir()));
        let _ = fs::remove_dir_all(&staging);
        let out_dir = staging.join("lib/modules").join(&release);
        fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
        let mut order = Vec::new();
        for name in GUEST_MODULES {
            // A module the package lacks is built in (or gone): the guest has it or the test that needs it says so.
            if !files.contains_key(*name) {
                eprintln!("vmtest: {package} has no module {name} (built in?); the guest loads it not");
                continue;
            }
            add_module(name, &files, &out_dir, &mut order)?;
        }
        fs::write(out_dir.join("load-order"), order.join("\n") + "\n")?;
        let final_dir = dest.join(modules_subdir());
        let _ = fs::remove_dir_all(&final_dir);
        fs::rename(&staging, &final_dir).with_context(|| format!("creating {}", final_dir.display()))?;
        let _ = fs::remove_dir_all(&work);
        Ok(())
    }

    fn download_vmlinuz(&self, package: &str, dest: &Path) -> Result<()> {
        let (work, tree) = self.unpack(package)?;
        let image = find_vmlinuz(&tree)?.with_context(|| format!("{package} contains no vmlinuz"))?;
        // Stage then rename, so an interrupted run never leaves a truncated kernel behind.
        let staging = dest.with_extension("partial");
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging)?;
        fs::copy(&image, staging.join("vmlinuz")).with_context(|| format!("copying {}", image.display()))?;
        let _ = fs::remove_dir_all(dest);
        fs::rename(&staging, dest).with_context(|| format!("creating {}", dest.display()))?;
        let _ = fs::remove_dir_all(&work);
        Ok(())
    }
}

/// Removes cached kernels no label points at any more (superseded versions, interrupted
/// downloads), so the cache holds one kernel per matrix entry.
pub fn prune(cache: &Path) {
    let dir = cache.join("kernels");
    let Ok(entries) = fs::read_dir(&dir) else { return };
    let entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    let current: Vec<String> = entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "current"))
        .filter_map(|p| fs::read_to_string(p).ok())
        .map(|name| name.trim().to_string())
        .collect();
    for path in entries.iter().filter(|p| p.is_dir()) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !current.contains(&name) {
            let _ = fs::remove_dir_all(path);
        }
    }
}

/// The `lib/modules/RELEASE` directory of a kernel's extracted modules, once complete.
fn modules_dir(kernel_dir: &Path) -> Option<PathBuf> {
    let dirs = fs::read_dir(kernel_dir.join(modules_subdir()).join("lib/modules")).ok()?;
    dirs.flatten().map(|e| e.path()).find(|d| d.join("load-order").is_file())
}

/// The kernel release a package's modules are for, and its module files by name (nf_conntrack ->
/// .../nf_conntrack.ko.xz).
fn module_files(tree: &Path) -> Result<(String, BTreeMap<String, PathBuf>)> {
    for base in ["usr/lib/modules", "lib/modules"] {
        let Ok(dirs) = fs::read_dir(tree.join(base)) else { continue };
        for release in dirs.flatten() {
            let mut files = BTreeMap::new();
            let mut pending = vec![release.path().join("kernel")];
            while let Some(dir) = pending.pop() {
                let Ok(entries) = fs::read_dir(&dir) else { continue };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if path.is_dir() {
                        pending.push(path);
                    } else if let Some(stem) = [".ko", ".ko.xz", ".ko.zst"].iter().find_map(|s| name.strip_suffix(s)) {
                        // modinfo names use underscores where file names may have dashes.
                        files.insert(stem.replace('-', "_"), path);
                    }
                }
            }
            if !files.is_empty() {
                return Ok((release.file_name().to_string_lossy().into_owned(), files));
            }
        }
    }
    bail!("the package has no kernel modules")
}

/// Decompresses module `name` into `out`, after its dependencies (modinfo `depends=`), appending each to
/// `order` once.
fn add_module(name: &str, files: &BTreeMap<String, PathBuf>, out: &Path, order: &mut Vec<String>) -> Result<()> {
    if order.iter().any(|m| m == name) {
        return Ok(());
    }
    let source = files.get(name).with_context(|| format!("module {name} is not in the kernel package"))?;
    let tool = match source.extension().and_then(|e| e.to_str()) {
        Some("xz") => Some("xz"),
        Some("zst") => Some("zstd"),
        _ => None,
    };
    let bytes = match tool {
        Some(tool) => {
            let out = Command::new(tool)
                .arg("-dc")
                .arg(source)
                .output()
                .with_context(|| format!("running {tool} (scripts/install-deps.sh installs it)"))?;
            if !out.status.success() {
                bail!("{tool} -dc {} failed: {}", source.display(), String::from_utf8_lossy(&out.stderr).trim());
            }
            out.stdout
        }
        None => fs::read(source).with_context(|| format!("reading {}", source.display()))?,
    };
    for dep in modinfo(&bytes, "depends").split(',').filter(|d| !d.is_empty()) {
        add_module(dep, files, out, order)?;
    }
    fs::write(out.join(format!("{name}.ko")), &bytes).with_context(|| format!("writing module {name}"))?;
    order.push(name.to_owned());
    Ok(())
}

/// A `key=value` string of a module's .modinfo section (NUL-separated), or "".
fn modinfo(ko: &[u8], key: &str) -> String {
    let needle = format!("{key}=");
    ko.split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(needle.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// boot/vmlinuz-VERSION (older packages) or usr/lib/modules/VERSION/vmlinuz (newer).
fn find_vmlinuz(tree: &Path) -> Result<Option<PathBuf>> {
    if let Ok(boot) = fs::read_dir(tree.join("boot")) {
        for entry in boot.flatten() {
            if entry.file_name().to_string_lossy().starts_with("vmlinuz") {
                return Ok(Some(entry.path()));
            }
        }
    }
    for base in ["usr/lib/modules", "lib/modules"] {
        if let Ok(dirs) = fs::read_dir(tree.join(base)) {
            for entry in dirs.flatten() {
                let candidate = entry.path().join("vmlinuz");
                if candidate.is_file() {
                    return Ok(Some(candidate));
                }
            }
        }
    }
    Ok(None)
}

/// Compares strings with digit runs as numbers: 6.12.9 < 6.12.10, deb12 < deb12.1.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (trim_zeros(&a[..na]), trim_zeros(&b[..nb]));
                let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let start = digits.iter().position(|&d| d != b'0').unwrap_or(digits.len());
    &digits[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_picks_newest_patch() {
        let mut names = vec![
            "linux-image-6.12.9+deb12-cloud-amd64",
            "linux-image-6.12.95+deb12-cloud-amd64",
            "linux-image-6.12.90+deb12.1-cloud-amd64",
            "linux-image-6.12.90+deb12-cloud-amd64",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "linux-image-6.12.9+deb12-cloud-amd64",
                "linux-image-6.12.90+deb12-cloud-amd64",
                "linux-image-6.12.90+deb12.1-cloud-amd64",
                "linux-image-6.12.95+deb12-cloud-amd64",
            ]
        );
    }
}

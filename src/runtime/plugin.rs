//! Finding (and, for the CPU, installing) the PJRT plugin for a platform.
//!
//! Order: an explicit path (`--plugin`), the `VISHWAM_PJRT_PLUGIN` environment variable, the
//! config's `runtime.plugin`, then a per-platform search: `cpu` looks in
//! `$VISHWAM_HOME/plugins/` and installs the plugin there with pip when it is missing; `cuda`
//! and `tpu` look in the site-packages directories that `python3` reports.
//!
//! Platform `auto` ([`Accelerators::probe`], [`Accelerators::choose`]) picks as JAX picks
//! its backend: the TPU when libtpu is installed and a TPU is attached, else CUDA GPUs when
//! their plugin is installed and the NVIDIA driver is loaded, else the CPU.

use super::{Result, RuntimeError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The PyPI package that carries the CPU plugin.
pub const CPU_PLUGIN_PACKAGE: &str = "lammps-jax-pjrt-cpu";
/// The CPU plugin version vishwam is built for.
pub const CPU_PLUGIN_VERSION: &str = "0.11.2";
/// The plugin file inside the CPU wheel.
const CPU_PLUGIN_MEMBER: &str = "lammps_jax_pjrt_cpu/pjrt_c_api_cpu_plugin.so";
/// Relative paths tried under each site-packages directory, per platform.
const CUDA_CANDIDATES: &[&str] = &[
    "jax_plugins/xla_cuda13/xla_cuda_plugin.so",
    "jax_plugins/xla_cuda12/xla_cuda_plugin.so",
];
const TPU_CANDIDATES: &[&str] = &["libtpu/libtpu.so"];

/// A platform vishwam can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// The host CPU (virtual devices via `cpu_device_count`).
    Cpu,
    /// NVIDIA GPUs through the CUDA plugin.
    Cuda,
    /// Google TPUs through libtpu.
    Tpu,
}

impl Platform {
    /// Parses `cpu`, `cuda` (or `gpu`), `tpu`.
    pub fn parse(name: &str) -> Result<Platform> {
        match name.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Platform::Cpu),
            "cuda" | "gpu" => Ok(Platform::Cuda),
            "tpu" => Ok(Platform::Tpu),
            other => Err(RuntimeError::Other(format!(
                "unknown platform `{other}`; expected one of cpu, cuda, tpu"
            ))),
        }
    }

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Cpu => "cpu",
            Platform::Cuda => "cuda",
            Platform::Tpu => "tpu",
        }
    }
}

pub use crate::paths::vishwam_home;

/// Where the CPU plugin lives once installed.
pub fn cpu_plugin_path() -> PathBuf {
    vishwam_home()
        .join("plugins")
        .join(format!("{CPU_PLUGIN_PACKAGE}-{CPU_PLUGIN_VERSION}"))
        .join("pjrt_c_api_cpu_plugin.so")
}

/// The plugin the user named, first of `--plugin` (`explicit`), `VISHWAM_PJRT_PLUGIN` and
/// `runtime.plugin` (`from_config`), with where it was named; None when none names one.
pub fn named_plugin(
    explicit: Option<&Path>,
    from_config: Option<&Path>,
) -> Option<(PathBuf, &'static str)> {
    let env = std::env::var_os("VISHWAM_PJRT_PLUGIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    [
        (explicit.map(Path::to_path_buf), "--plugin"),
        (env, "VISHWAM_PJRT_PLUGIN"),
        (from_config.map(Path::to_path_buf), "runtime.plugin"),
    ]
    .into_iter()
    .find_map(|(path, origin)| Some((path?, origin)))
}

/// Resolves the plugin path in the documented order, installing the CPU plugin if needed.
pub fn resolve_plugin(
    platform: Platform,
    explicit: Option<&Path>,
    from_config: Option<&Path>,
) -> Result<PathBuf> {
    if let Some((path, origin)) = named_plugin(explicit, from_config) {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(RuntimeError::PluginNotFound {
                platform: platform.name().into(),
                detail: format!("{origin} names {}, which is not a file", path.display()),
            })
        };
    }
    match platform {
        Platform::Cpu => {
            let path = cpu_plugin_path();
            if !path.is_file() {
                // Threads of one process (the tests' binaries) install once; other processes
                // may install at the same time, which is safe: each downloads into its own
                // temporary directory and the plugin appears by an atomic rename.
                static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
                let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
                if !path.is_file() {
                    install_cpu_plugin(&path)?;
                }
            }
            Ok(path)
        }
        Platform::Cuda => find_in_site_packages(
            platform,
            CUDA_CANDIDATES,
            "pip install jax-cuda13-pjrt (or jax-cuda12-pjrt)",
        ),
        Platform::Tpu => find_in_site_packages(platform, TPU_CANDIDATES, "pip install libtpu"),
    }
}

/// What platform discovery found on this machine: plugins and the hardware they drive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accelerators {
    /// libtpu, when installed.
    pub tpu_plugin: Option<PathBuf>,
    /// A TPU device node (`/dev/accel0`, or `/dev/vfio/0` on newer TPUs), when present.
    pub tpu_device: Option<PathBuf>,
    /// The XLA CUDA plugin, when installed.
    pub cuda_plugin: Option<PathBuf>,
    /// A sign of the NVIDIA driver (`/proc/driver/nvidia/version` or `/dev/nvidia0`).
    pub cuda_driver: Option<PathBuf>,
    /// Why the site-packages could not be searched, if they could not.
    pub search_error: Option<String>,
}

/// The platform that `auto` picked, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformChoice {
    /// The platform.
    pub platform: Platform,
    /// One sentence for the start-up log.
    pub reason: String,
}

impl Accelerators {
    /// Looks for libtpu and the CUDA plugin in `python3`'s site-packages, and for TPU and
    /// NVIDIA device nodes.
    pub fn probe() -> Accelerators {
        let first_file = |paths: &[&str]| paths.iter().map(PathBuf::from).find(|p| p.exists());
        let (dirs, search_error) = match site_packages() {
            Ok(dirs) => (dirs, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let find = |candidates: &[&str]| {
            dirs.iter()
                .flat_map(|d| candidates.iter().map(move |c| d.join(c)))
                .find(|p| p.is_file())
        };
        Accelerators {
            tpu_plugin: find(TPU_CANDIDATES),
            tpu_device: first_file(&["/dev/accel0", "/dev/vfio/0"]),
            cuda_plugin: find(CUDA_CANDIDATES),
            cuda_driver: first_file(&["/proc/driver/nvidia/version", "/dev/nvidia0"]),
            search_error,
        }
    }

    /// The TPU when libtpu and a TPU are both found, else CUDA when its plugin and the
    /// driver are, else the CPU; the reason names what was found and what was missing.
    pub fn choose(&self) -> PlatformChoice {
        let shown = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        if let (Some(plugin), Some(device)) = (shown(&self.tpu_plugin), shown(&self.tpu_device)) {
            return PlatformChoice {
                platform: Platform::Tpu,
                reason: format!("libtpu is installed ({plugin}) and a TPU is attached ({device})"),
            };
        }
        let mut missing = Vec::new();
        match (shown(&self.tpu_plugin), shown(&self.tpu_device)) {
            (Some(p), None) => missing.push(format!(
                "libtpu is installed ({p}) but no TPU is attached (no /dev/accel0 or /dev/vfio/0)"
            )),
            _ => missing.push("libtpu is not installed".to_string()),
        }
        if let (Some(plugin), Some(driver)) = (shown(&self.cuda_plugin), shown(&self.cuda_driver)) {
            return PlatformChoice {
                platform: Platform::Cuda,
                reason: format!(
                    "{}; the CUDA plugin is installed ({plugin}) and the NVIDIA driver is loaded ({driver})",
                    missing.join("; ")
                ),
            };
        }
        match (shown(&self.cuda_plugin), shown(&self.cuda_driver)) {
            (Some(p), None) => missing.push(format!(
                "the CUDA plugin is installed ({p}) but no NVIDIA driver is loaded"
            )),
            _ => missing.push("the XLA CUDA plugin is not installed".to_string()),
        }
        if let Some(e) = &self.search_error {
            missing.push(format!("site-packages not searched: {e}"));
        }
        PlatformChoice {
            platform: Platform::Cpu,
            reason: missing.join("; "),
        }
    }
}

/// The platform a plugin file is for, from its name (`libtpu.so`, `xla_cuda_plugin.so`,
/// `pjrt_c_api_cpu_plugin.so`); `None` when the name does not say.
pub fn platform_of_plugin(path: &Path) -> Option<Platform> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    if name.contains("tpu") {
        Some(Platform::Tpu)
    } else if name.contains("cuda") || name.contains("gpu") {
        Some(Platform::Cuda)
    } else if name.contains("cpu") {
        Some(Platform::Cpu)
    } else {
        None
    }
}

/// The site-packages directories of `python3`.
fn site_packages() -> std::result::Result<Vec<PathBuf>, String> {
    let script = "import site, sys\nfor p in site.getsitepackages() + [site.getusersitepackages()] + sys.path: print(p)";
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .map_err(|e| format!("could not run python3 to find site-packages: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "python3 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let p = PathBuf::from(line.trim());
        if !line.trim().is_empty() && !dirs.contains(&p) {
            dirs.push(p);
        }
    }
    Ok(dirs)
}

fn find_in_site_packages(platform: Platform, candidates: &[&str], fix: &str) -> Result<PathBuf> {
    let dirs = site_packages().map_err(|detail| RuntimeError::PluginNotFound {
        platform: platform.name().into(),
        detail: format!("{detail}; pass --plugin PATH or set VISHWAM_PJRT_PLUGIN"),
    })?;
    let mut looked = Vec::new();
    for dir in &dirs {
        for rel in candidates {
            let p = dir.join(rel);
            if p.is_file() {
                return Ok(p);
            }
            looked.push(p.display().to_string());
        }
    }
    Err(RuntimeError::PluginNotFound {
        platform: platform.name().into(),
        detail: format!(
            "looked for {} under python3's site-packages:\n  {}\nfix: {fix}, or pass --plugin PATH / set VISHWAM_PJRT_PLUGIN",
            candidates.join(" or "),
            looked.join("\n  ")
        ),
    })
}

/// Downloads the CPU plugin wheel with pip and unpacks the plugin to `dest` (atomically).
pub fn install_cpu_plugin(dest: &Path) -> Result<()> {
    let install_err = |detail: String| RuntimeError::PluginInstall {
        platform: "cpu".into(),
        detail,
    };
    let dir = dest
        .parent()
        .ok_or_else(|| install_err("bad destination".into()))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
    let staging = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(dir)
        .map_err(|e| RuntimeError::io(format!("creating a directory in {}", dir.display()), e))?;
    let tmp = staging.path().to_path_buf();

    let spec = format!("{CPU_PLUGIN_PACKAGE}=={CPU_PLUGIN_VERSION}");
    tracing::info!(
        "installing the XLA CPU plugin ({spec}, ~60 MB download) into {}",
        dir.display()
    );
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!("python3 -m pip download {spec}"));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            &spec,
            "-d",
        ])
        .arg(&tmp)
        .output();
    spinner.finish_and_clear();
    let out = out.map_err(|e| {
        install_err(format!(
            "could not run `python3 -m pip download {spec}`: {e}. Install Python 3 with pip, or download the wheel yourself and pass --plugin PATH to its {CPU_PLUGIN_MEMBER}"
        ))
    })?;
    if !out.status.success() {
        return Err(install_err(format!(
            "`python3 -m pip download {spec}` failed:\n{}\nCheck network access to the package index, or pass --plugin PATH",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let wheel = std::fs::read_dir(&tmp)
        .map_err(|e| RuntimeError::io(format!("reading {}", tmp.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| {
            install_err(format!(
                "pip reported success but left no wheel in {}",
                tmp.display()
            ))
        })?;
    extract_member(&wheel, CPU_PLUGIN_MEMBER, dest).map_err(install_err)?;
    tracing::info!("installed {}", dest.display());
    Ok(())
}

/// Extracts one member of a zip archive to `dest` via a temporary file and a rename.
fn extract_member(archive: &Path, member: &str, dest: &Path) -> std::result::Result<(), String> {
    let file =
        std::fs::File::open(archive).map_err(|e| format!("opening {}: {e}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| format!("{} is not a valid wheel: {e}", archive.display()))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| format!("{} has no {member}: {e}", archive.display()))?;
    let bar = indicatif::ProgressBar::new(entry.size());
    bar.set_style(
        indicatif::ProgressStyle::with_template("unpacking plugin {bar:30} {bytes}/{total_bytes}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // A uniquely named temporary file beside `dest`: removed if anything fails, renamed
    // into place at the end, so a reader never sees a half-written plugin.
    let mut part = tempfile::Builder::new()
        .prefix(".plugin-")
        .suffix(".part")
        .tempfile_in(dest.parent().unwrap_or(Path::new(".")))
        .map_err(|e| format!("creating a temporary file beside {}: {e}", dest.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut entry, &mut buf)
            .map_err(|e| format!("reading {member}: {e}"))?;
        if n == 0 {
            break;
        }
        part.write_all(&buf[..n])
            .map_err(|e| format!("writing {}: {e}", part.path().display()))?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    part.as_file()
        .sync_all()
        .map_err(|e| format!("syncing {}: {e}", part.path().display()))?;
    part.persist(dest).map(drop).map_err(|e| {
        format!(
            "renaming {} to {}: {}",
            e.file.path().display(),
            dest.display(),
            e.error
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(tpu: (bool, bool), cuda: (bool, bool)) -> Accelerators {
        let path = |on: bool, p: &str| on.then(|| PathBuf::from(p));
        Accelerators {
            tpu_plugin: path(tpu.0, "/site/libtpu/libtpu.so"),
            tpu_device: path(tpu.1, "/dev/accel0"),
            cuda_plugin: path(cuda.0, "/site/jax_plugins/xla_cuda13/xla_cuda_plugin.so"),
            cuda_driver: path(cuda.1, "/proc/driver/nvidia/version"),
            search_error: None,
        }
    }

    #[test]
    fn auto_prefers_the_tpu_then_cuda_then_the_cpu() {
        let choice = found((true, true), (true, true)).choose();
        assert_eq!(choice.platform, Platform::Tpu);
        assert!(
            choice.reason.contains("/site/libtpu/libtpu.so"),
            "{}",
            choice.reason
        );
        let choice = found((false, false), (true, true)).choose();
        assert_eq!(choice.platform, Platform::Cuda);
        assert!(
            choice.reason.contains("libtpu is not installed"),
            "{}",
            choice.reason
        );
        assert!(
            choice.reason.contains("xla_cuda_plugin.so"),
            "{}",
            choice.reason
        );
        let choice = found((false, false), (false, false)).choose();
        assert_eq!(choice.platform, Platform::Cpu);
        assert!(
            choice.reason.contains("CUDA plugin is not installed"),
            "{}",
            choice.reason
        );
    }

    #[test]
    fn a_plugin_without_its_hardware_is_passed_over_with_a_reason() {
        let choice = found((true, false), (true, true)).choose();
        assert_eq!(choice.platform, Platform::Cuda);
        assert!(
            choice.reason.contains("no TPU is attached"),
            "{}",
            choice.reason
        );
        let choice = found((true, false), (true, false)).choose();
        assert_eq!(choice.platform, Platform::Cpu);
        assert!(
            choice.reason.contains("no NVIDIA driver"),
            "{}",
            choice.reason
        );
    }

    #[test]
    fn plugin_file_names_tell_their_platform() {
        let of = |p: &str| platform_of_plugin(Path::new(p));
        assert_eq!(of("/x/libtpu.so"), Some(Platform::Tpu));
        assert_eq!(of("/x/xla_cuda_plugin.so"), Some(Platform::Cuda));
        assert_eq!(of("/x/pjrt_c_api_cpu_plugin.so"), Some(Platform::Cpu));
        assert_eq!(of("/x/plugin.so"), None);
    }
}

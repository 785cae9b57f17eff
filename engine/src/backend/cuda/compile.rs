//! Compiling `kernels.cu` with NVRTC. The PTX is cached on disk under a name derived from the
//! source, the target architecture and the NVRTC version, so a daemon restart loads it in
//! milliseconds instead of recompiling, and a changed kernel never loads stale PTX.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The kernels' CUDA C source.
pub const KERNELS_SRC: &str = include_str!("kernels.cu");

/// Names of every kernel in `KERNELS_SRC` (all are looked up at load).
pub const KERNEL_NAMES: &[&str] = &[
    "embed",
    "residual_norm",
    "qkv_rope_store",
    "attention",
    "silu_mul",
    "combine_rows",
    "copy_page",
    "fill_random",
    "sample_slots",
    "gemv_bf16",
    "attention_combine",
];

/// True when libnvrtc can be loaded (cudarc panics on first use otherwise).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC's (major, minor) version.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    if !nvrtc_available() {
        return Err(no_nvrtc());
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: plain out-parameters.
    let rc = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if rc != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::Config(format!("nvrtcVersion failed: {rc:?}")));
    }
    Ok((major, minor))
}

fn no_nvrtc() -> Error {
    Error::Config(
        "libnvrtc not found: install the CUDA toolkit's NVRTC (or the PyPI wheel \
         nvidia-cuda-nvrtc-cu12) and put its lib directory on LD_LIBRARY_PATH"
            .into(),
    )
}

/// FNV-1a, 64 bit: a stable cache key (std's hasher is randomly seeded).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Compiles the kernels to PTX for `compute_<arch>` (e.g. 90 for Hopper).
pub fn compile_ptx(arch: u32) -> Result<String> {
    if !nvrtc_available() {
        return Err(no_nvrtc());
    }
    let opts = cudarc::nvrtc::CompileOptions {
        options: vec![format!("--gpu-architecture=compute_{arch}")],
        name: Some("pied_kernels.cu".into()),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(KERNELS_SRC, opts)
        .map_err(|e| Error::Config(format!("NVRTC could not compile the kernels: {e:?}")))?;
    Ok(ptx.to_src())
}

/// The default cache directory: `$PIE_CUDA_CACHE`, else `$XDG_CACHE_HOME/pied/ptx`, else
/// `~/.cache/pied/ptx`, else none (compile every time).
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("PIE_CUDA_CACHE") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("pied/ptx"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pied/ptx"))
}

/// PTX for `arch`, from the cache when present, else compiled and written to the cache
/// (atomically: temp file + rename; a cache that cannot be written is only a slower start).
pub fn cached_ptx(arch: u32, cache: Option<&Path>) -> Result<String> {
    let (maj, min) = nvrtc_version()?;
    let key = fnv1a(&[
        KERNELS_SRC.as_bytes(),
        &arch.to_le_bytes(),
        &maj.to_le_bytes(),
        &min.to_le_bytes(),
    ]);
    let file = cache.map(|d| d.join(format!("kernels-sm{arch}-{key:016x}.ptx")));
    if let Some(f) = &file
        && let Ok(text) = std::fs::read_to_string(f)
        && text.contains(".entry")
    {
        return Ok(text);
    }
    let ptx = compile_ptx(arch)?;
    if let (Some(f), Some(dir)) = (&file, cache)
        && std::fs::create_dir_all(dir).is_ok()
    {
        let tmp = dir.join(format!(".tmp-{}-{key:016x}", std::process::id()));
        if std::fs::write(&tmp, &ptx).is_ok() && std::fs::rename(&tmp, f).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(ptx)
}

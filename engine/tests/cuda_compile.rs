//! The CUDA kernels compile with NVRTC for Ampere (sm_80) and Hopper (sm_90), on a machine
//! with no GPU: only libnvrtc is needed (CI installs the PyPI wheel `nvidia-cuda-nvrtc-cu12`
//! and sets `PIE_REQUIRE_NVRTC=1`, so a missing library fails there instead of skipping).
#![cfg(feature = "cuda")]

use engine::backend::cuda::compile::{
    KERNEL_NAMES, cached_ptx, compile_ptx, nvrtc_available, nvrtc_version,
};

fn nvrtc_or_skip() -> bool {
    if nvrtc_available() {
        return true;
    }
    assert!(
        std::env::var_os("PIE_REQUIRE_NVRTC").is_none(),
        "PIE_REQUIRE_NVRTC is set but libnvrtc cannot be loaded (LD_LIBRARY_PATH?)"
    );
    eprintln!("skipped: libnvrtc not found");
    false
}

#[test]
fn kernels_compile_for_sm80_and_sm90() {
    if !nvrtc_or_skip() {
        return;
    }
    eprintln!("NVRTC {:?}", nvrtc_version().unwrap());
    for arch in [80, 90] {
        let ptx = compile_ptx(arch).unwrap_or_else(|e| panic!("sm_{arch}: {e}"));
        assert!(
            ptx.contains(&format!(".target sm_{arch}")),
            "sm_{arch} target"
        );
        for name in KERNEL_NAMES {
            assert!(
                ptx.contains(&format!(".entry {name}(")),
                "kernel {name} missing from the sm_{arch} PTX"
            );
        }
        // No kernel may put an array in local memory through a run-time index (attention's
        // per-thread accumulators must stay in registers). sincosf's large-argument path in
        // qkv_rope_store is the one expected user.
        for entry in ptx.split(".entry ").skip(1) {
            let name = entry.split('(').next().unwrap_or("");
            assert!(
                name == "qkv_rope_store" || !entry.contains(".local"),
                "sm_{arch}: kernel {name} uses local memory"
            );
        }
    }
}

#[test]
fn ptx_cache_is_reused_and_keyed_by_source() {
    if !nvrtc_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = cached_ptx(90, Some(dir.path())).unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "one cache file");
    let path = files[0].as_ref().unwrap().path();
    // A cached file is used as is: mark it and read it back through the cache.
    std::fs::write(&path, format!("{a}\n// marked")).unwrap();
    let b = cached_ptx(90, Some(dir.path())).unwrap();
    assert!(b.ends_with("// marked"), "cache not used");
    // Another architecture is another entry.
    cached_ptx(80, Some(dir.path())).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

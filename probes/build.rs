//! Passes the probes' linker scripts to ld.lld (only for the bare-metal probe binaries): every
//! probe is linked at RAM + 0x200000 like an arm64 Image, except `raw`, which is linked where
//! QEMU loads a raw binary (RAM + 0x80000).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    if std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default() == "none" {
        let bins = std::fs::read_dir(format!("{dir}/src/bin")).expect("probes/src/bin");
        for bin in bins.filter_map(|e| e.ok()).filter_map(|e| e.path().file_stem()?.to_str().map(String::from)) {
            let script = if bin == "raw" { "link-raw.ld" } else { "link.ld" };
            println!("cargo:rustc-link-arg-bin={bin}=-T{dir}/{script}");
        }
    }
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=link-raw.ld");
    println!("cargo:rerun-if-changed=src/bin");
    println!("cargo:rerun-if-changed=build.rs");
}

//! Builds `guest/mvhttp/` (the handler bench's load generator and user-space server, run
//! inside guests; one C program in four parts, joined in order) into `OUT_DIR`;
//! `handler.rs` embeds it.

#[path = "../tests/probes/build.rs"]
mod probes;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rerun-if-changed=guest/mvhttp");
    println!("cargo::rerun-if-changed=../tests/probes/build.rs");
    let out = std::env::var_os("OUT_DIR").ok_or("cargo sets OUT_DIR")?;
    let source = concat!(
        include_str!("guest/mvhttp/common.c"),
        include_str!("guest/mvhttp/load.c"),
        include_str!("guest/mvhttp/serve.c"),
        include_str!("guest/mvhttp/main.c"),
    );
    probes::freestanding(std::path::Path::new(&out), "mvhttp", source)?;
    Ok(())
}

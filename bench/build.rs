//! Builds `guest/mvhttp.c` (the handler bench's load generator and user-space server,
//! run inside guests) into `OUT_DIR`; `handler.rs` embeds it.

#[path = "../tests/probes/build.rs"]
mod probes;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rerun-if-changed=guest/mvhttp.c");
    println!("cargo::rerun-if-changed=../tests/probes/build.rs");
    let out = std::env::var_os("OUT_DIR").ok_or("cargo sets OUT_DIR")?;
    probes::freestanding(
        std::path::Path::new(&out),
        "mvhttp",
        include_str!("guest/mvhttp.c"),
    )?;
    Ok(())
}

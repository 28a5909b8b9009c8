//! Loading and unloading modules in the running kernel.

use nix::errno::Errno;
use nix::kmod::{delete_module, finit_module, init_module, DeleteModuleFlags, ModuleInitFlags};
use nix::sys::memfd::{memfd_create, MFdFlags};
use std::ffi::CString;
use std::io::Write;

/// Loads a module image with parameters: `finit_module` on a memfd holding the image (the
/// kernel then sees a file, as with `insmod`), `init_module` if that is unavailable.
pub fn load(image: &[u8], params: &str) -> Result<(), Errno> {
    let params = CString::new(params).map_err(|_| Errno::EINVAL)?;
    match load_from_memfd(image, &params) {
        Err(Errno::ENOSYS) => init_module(image, &params),
        other => other,
    }
}

fn load_from_memfd(image: &[u8], params: &CString) -> Result<(), Errno> {
    let fd = memfd_create("modvisor-module", MFdFlags::MFD_CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(image)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc_eio())))?;
    finit_module(&file, params, ModuleInitFlags::empty())
}

fn libc_eio() -> i32 {
    Errno::EIO as i32
}

/// Unloads a module (not forced; fails while it is in use).
pub fn unload(name: &str) -> Result<(), Errno> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    delete_module(&name, DeleteModuleFlags::O_NONBLOCK)
}

/// What an errno from the module syscalls means.
pub fn describe(e: Errno) -> String {
    let what = match e {
        Errno::EKEYREJECTED => "the kernel rejected the module's signature (EKEYREJECTED)",
        Errno::ENOKEY => "the module's signing key is not trusted by the kernel (ENOKEY)",
        Errno::EBADMSG => "the module's signature is malformed (EBADMSG)",
        Errno::ENOEXEC => "invalid module format (ENOEXEC)",
        Errno::EEXIST => "a module of that name is already loaded (EEXIST)",
        Errno::ENOENT => "unknown symbol: a dependency is not loaded, or no such module (ENOENT)",
        Errno::EINVAL => "invalid parameters or image (EINVAL)",
        Errno::EPERM => "not permitted (EPERM)",
        Errno::EBUSY => "the module is in use (EBUSY)",
        Errno::EWOULDBLOCK => "the module is in use (EWOULDBLOCK)",
        Errno::ENOMEM => "out of memory (ENOMEM)",
        other => return format!("{} ({other:?})", other.desc()),
    };
    what.to_string()
}

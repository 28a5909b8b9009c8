//! The console sink behind COM1: guest output to a file, line-buffered and capped so a
//! guest that floods its console cannot fill the host's disk or the VMM's memory.

use crate::state::VmStatus;
use std::fs::File;
use std::io::Write;
use std::sync::Arc;

/// Default cap on console bytes written per VM.
pub const DEFAULT_LIMIT: u64 = 64 << 20;
/// Buffered bytes that force a write even without a newline.
const FLUSH_AT: usize = 4096;

/// Console output to a file, at most `limit` bytes; the rest is counted and dropped.
#[derive(Debug)]
pub struct ConsoleSink {
    file: File,
    buf: Vec<u8>,
    written: u64,
    limit: u64,
    dropped: u64,
    status: Arc<VmStatus>,
}

impl ConsoleSink {
    /// Writes to `file`, keeping at most `limit` bytes.
    pub fn new(file: File, limit: u64, status: Arc<VmStatus>) -> Self {
        Self {
            file,
            buf: Vec::with_capacity(FLUSH_AT),
            written: 0,
            limit,
            dropped: 0,
            status,
        }
    }

    fn drain(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            tracing::warn!(error = %e, "console write failed; output dropped");
        }
        self.buf.clear();
    }
}

impl Write for ConsoleSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.limit.saturating_sub(self.written) as usize;
        let keep = data.len().min(room);
        if keep < data.len() {
            let lost = (data.len() - keep) as u64;
            if self.dropped == 0 {
                tracing::warn!(
                    limit = self.limit,
                    "console cap reached; dropping guest output"
                );
            }
            self.dropped += lost;
            self.status.add_console_dropped(lost);
        }
        self.buf.extend_from_slice(&data[..keep]);
        self.written += keep as u64;
        if self.buf.len() >= FLUSH_AT || data[..keep].contains(&b'\n') {
            self.drain();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.drain();
        Ok(())
    }
}

impl Drop for ConsoleSink {
    fn drop(&mut self) {
        self.drain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console");
        let status = Arc::new(VmStatus::new());
        let mut sink = ConsoleSink::new(File::create(&path).unwrap(), 10, status.clone());
        sink.write_all(b"hello\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello\n");
        sink.write_all(b"world, and more").unwrap();
        drop(sink);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello\nworl");
        assert_eq!(status.report().console_dropped, 11);
    }
}

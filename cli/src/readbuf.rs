//! A reused buffer that holds one whole file at a time: what `inspect` and `check` read objects into.
//!
//! Reading a file costs its pages as much as its bytes: every new page of the buffer is zeroed and charged by the
//! kernel. A large object (Cilium's datapath, 1-2 MB; Falco's probe, 4-6 MB) goes into anonymous memory aligned to
//! 2 MiB and advised `MADV_HUGEPAGE`, so that the kernel can make it of a few transparent huge pages instead of
//! hundreds of small ones: 0.7 -> 0.3 ms for a 1.8 MB object, 2.0 -> 0.95 ms for 4 MB here (docs/benchmarks.md).
//! The file is still `read` into it, not mapped: another process writing or truncating a mapped file would change
//! bytes the parser holds, or kill it with `SIGBUS`.

use std::io::Read as _;
use std::path::Path;
use std::ptr::NonNull;

use crate::bigalloc;

/// Initial size of the small buffer: larger than most BPF objects. Not larger: each page of it is zeroed, a page
/// fault the first time, and page faults are a good part of a short run.
const SMALL: usize = 16 * 1024;

/// Files of this size or more go into huge-page memory. Below it a 2 MiB page zeroes more than the file's small
/// pages cost.
const HUGE_ABOVE: usize = 512 * 1024;

/// Above this, small-page memory is populated in one call rather than faulted page by page as the read copies.
const POPULATE_ABOVE: usize = 256 * 1024;

#[derive(Default)]
pub struct ReadBuf {
    small: Vec<u8>,
    huge: Option<HugeRegion>,
}

impl ReadBuf {
    /// Reads the whole file at `path` (open, read until EOF, close) and returns its bytes, which stay valid until
    /// the next read. `std::fs::read` would also allocate per file and stat every file; `read_to_end` reads 8 KiB
    /// first.
    pub fn read(&mut self, path: &Path) -> std::io::Result<&[u8]> {
        let mut file = std::fs::File::open(path)?;
        if self.small.len() < SMALL {
            self.small.resize(SMALL, 0);
        }
        let len = fill(&mut file, &mut self.small)?;
        if len < self.small.len() {
            return Ok(&self.small[..len]);
        }
        // As large as the small buffer or larger: the rest goes where the file's size says.
        let size = file.metadata().map_or(0, |m| usize::try_from(m.len()).unwrap_or(0));
        self.read_rest(&mut file, len, size)
    }

    /// The rest of a file whose first `head` bytes fill the small buffer; `size` is the file's length as its
    /// metadata said, which a file written meanwhile can outgrow, or fall short of what was read (truncated).
    fn read_rest(&mut self, file: &mut std::fs::File, head: usize, size: usize) -> std::io::Result<&[u8]> {
        let size = size.max(head);
        if size >= HUGE_ABOVE {
            if let (Some(len), Some(huge)) = (self.read_huge(file, head, size)?, &self.huge) {
                return Ok(&huge.bytes()[..len]);
            }
        } else {
            self.small.truncate(head);
        }
        // The size `read_to_end` would reserve, reserved here to populate it first. Not zeroed: doubling a zeroed
        // buffer cost a 616 KB object 2 MB of `memset` and its page faults.
        self.small.reserve(size.saturating_sub(self.small.len()).saturating_add(1));
        populate(self.small.spare_capacity_mut());
        file.read_to_end(&mut self.small)?;
        Ok(&self.small)
    }

    /// The rest of a large file, after the `head` bytes in the small buffer, into the huge-page region (made or
    /// grown for `size`): the file's length. None when no region could be made, or when the file outgrew `size`
    /// while read; then the small buffer holds exactly the bytes read so far.
    fn read_huge(&mut self, file: &mut std::fs::File, head: usize, size: usize) -> std::io::Result<Option<usize>> {
        // One byte more than the size: a read that fills it found a file longer than its size said.
        let want = size.saturating_add(1);
        if self.huge.as_ref().is_none_or(|h| h.len < want) {
            self.huge = None; // unmapped before mapping a larger one
            self.huge = HugeRegion::new(want);
        }
        let Some(huge) = self.huge.as_mut() else {
            self.small.truncate(head);
            return Ok(None);
        };
        let buf = huge.bytes_mut();
        buf[..head].copy_from_slice(&self.small[..head]);
        let len = head + fill(file, &mut buf[head..])?;
        if len < buf.len() {
            return Ok(Some(len));
        }
        self.small.clear();
        self.small.extend_from_slice(&buf[..len]);
        Ok(None)
    }
}

/// Reads into `buf` until it is full or the file ends; returns how many bytes were read.
fn fill(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

/// A block of huge-page memory (`bigalloc::map`), `len` bytes, its first `want` bytes populated.
struct HugeRegion {
    data: NonNull<u8>,
    len: usize,
}

impl HugeRegion {
    fn new(want: usize) -> Option<Self> {
        let data = bigalloc::map(want, true)?;
        // SAFETY: a block from `map`, still mapped.
        let len = unsafe { bigalloc::room(data) };
        // Only what the file needs is populated: with huge pages that is every page it touches anyway, without
        // them no small page more than it fills. Advice only: without MADV_POPULATE_WRITE (Linux 5.14) the pages
        // are made as the read copies into them.
        // SAFETY: advice on memory this region owns (want <= len); it changes no byte (zeros).
        unsafe { libc::madvise(data.as_ptr().cast(), want, libc::MADV_POPULATE_WRITE) };
        Some(HugeRegion { data, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: [data, data + len) is mapped readable and writable for as long as self lives, initialized (an
        // anonymous mapping reads as zeros), and only borrowed through self.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr(), self.len) }
    }
}

impl Drop for HugeRegion {
    fn drop(&mut self) {
        // SAFETY: the block `map` made, unmapped once; no borrow of it outlives self.
        unsafe { bigalloc::unmap(self.data) };
    }
}

/// Makes the pages of `spare` in one call (`MADV_POPULATE_WRITE`, Linux 5.14) rather than one page fault each
/// as the read copies into them: ~20% of the time of reading a 2-4 MB object with small pages here
/// (docs/benchmarks.md). Advice only: a kernel without it, or a range that spans no whole page, is left to fault.
fn populate(spare: &mut [std::mem::MaybeUninit<u8>]) {
    if spare.len() < POPULATE_ABOVE {
        return;
    }
    // SAFETY: sysconf reads a constant.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
    if !page.is_power_of_two() {
        return;
    }
    let start = spare.as_mut_ptr() as usize;
    let (Some(begin), Some(end)) = (start.checked_next_multiple_of(page), start.checked_add(spare.len())) else {
        return;
    };
    let end = end & !(page - 1);
    if end > begin {
        // SAFETY: [begin, end) lies within `spare`, memory this Vec owns and nothing reads while it is unset;
        // populating writes no byte of it.
        unsafe { libc::madvise(begin as *mut libc::c_void, end - begin, libc::MADV_POPULATE_WRITE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bigalloc::HUGE_PAGE;

    /// One buffer over files smaller and larger than each of its parts, in turns: each read gives exactly the
    /// file's bytes, whatever the buffer held before (small, grown small, huge-page memory reused and grown).
    #[test]
    fn reads_give_each_files_bytes_over_small_and_large_files() {
        let dir = crate::test_dir("readbuf");
        let sizes = [
            10,
            3 * SMALL + 5,
            0,
            SMALL,
            SMALL + 1,
            HUGE_ABOVE - 1,
            HUGE_ABOVE,
            100,
            HUGE_PAGE,
            HUGE_PAGE - 1,
            2 * HUGE_PAGE + 7,
            HUGE_ABOVE + 3,
        ];
        let mut buf = ReadBuf::default();
        for (i, &n) in sizes.iter().enumerate() {
            let path = dir.join(format!("f{i}"));
            let bytes: Vec<u8> = (0..n).map(|j| (j * 7 + i) as u8).collect();
            std::fs::write(&path, &bytes).unwrap();
            let read = buf.read(&path).unwrap();
            assert_eq!(read, &bytes[..], "file {i} of {n} bytes");
            // Which memory held it: the huge-page region exactly for the large files.
            let at = read.as_ptr();
            assert_eq!(buf.huge.as_ref().is_some_and(|h| h.bytes().as_ptr() == at), n >= HUGE_ABOVE, "file {i}");
        }
        assert!(buf.read(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A size smaller than what the small buffer already holds (the file truncated between the read and the
    /// stat) still reads the file whole, and never indexes past the huge-page region.
    #[test]
    fn a_size_below_what_was_read_is_taken_as_what_was_read() {
        let dir = crate::test_dir("readbuf-truncated");
        let path = dir.join("big");
        let head = HUGE_PAGE + 4096;
        let bytes: Vec<u8> = (0..head + 3).map(|j| (j * 5) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        // A previous file left the small buffer `head` long, and this one filled it.
        let mut buf = ReadBuf { small: bytes[..head].to_vec(), ..Default::default() };
        let mut file = std::fs::File::open(&path).unwrap();
        file.read_exact(&mut vec![0; head]).unwrap();
        // Its size said to be less than the region it would need for what was read.
        assert!(buf.read_rest(&mut file, head, HUGE_ABOVE).unwrap() == bytes, "the whole file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file longer than its size said when it was opened (it grew meanwhile) is read whole, into the small
    /// buffer: no byte past the region is lost or invented.
    #[test]
    fn a_file_that_outgrows_its_size_is_read_whole() {
        let dir = crate::test_dir("readbuf-grown");
        let path = dir.join("grown");
        let bytes: Vec<u8> = (0..3 * HUGE_PAGE).map(|j| (j * 13) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let mut buf = ReadBuf { small: bytes[..SMALL].to_vec(), ..Default::default() };
        let mut file = std::fs::File::open(&path).unwrap();
        file.read_exact(&mut [0; SMALL]).unwrap();
        // Its size said to be a third of what it is, as if it tripled after the stat.
        assert!(buf.read_rest(&mut file, SMALL, HUGE_PAGE).unwrap() == bytes, "the whole file");
        assert!(buf.huge.is_some(), "read through the huge-page region");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

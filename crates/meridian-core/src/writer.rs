//! Writes a response into a caller's buffer: name compression, section counts, and whole-RRset
//! rollback when a size limit is hit (truncation never splits an RRset, RFC 2181 §9).

use crate::name::NAME_LABELS_MAX;
use crate::rdata::RType;

/// Names remembered for compression. Beyond this we write names in full: answers stay correct,
/// only slightly larger. 64 covers a 13-NS referral with all its glue.
pub const COMPRESSION_ENTRIES_MAX: usize = 64;
/// Offsets a compression pointer can reach (14 bits).
const POINTER_TARGET_MAX: usize = 0x3FFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Section {
    Answer = 0,
    Authority = 1,
    Additional = 2,
}

/// A rollback point.
#[derive(Clone, Copy)]
pub struct Mark {
    len: usize,
    counts: [u16; 3],
    comp_count: usize,
}

pub struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
    /// Bytes available for records; the caller has already reserved room for the OPT record.
    limit: usize,
    counts: [u16; 3],
    comp: [u16; COMPRESSION_ENTRIES_MAX],
    comp_count: usize,
}

impl<'b> Writer<'b> {
    /// Starts after a header and question the caller already wrote into `buf[..start]`.
    pub fn new(buf: &'b mut [u8], start: usize, limit: usize) -> Writer<'b> {
        debug_assert!(start <= limit && limit <= buf.len());
        Writer {
            buf,
            len: start,
            limit,
            counts: [0; 3],
            comp: [0; COMPRESSION_ENTRIES_MAX],
            comp_count: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn counts(&self) -> [u16; 3] {
        self.counts
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(self.buf.len());
    }

    pub fn buffer(&mut self) -> &mut [u8] {
        self.buf
    }

    pub fn mark(&self) -> Mark {
        Mark {
            len: self.len,
            counts: self.counts,
            comp_count: self.comp_count,
        }
    }

    pub fn rollback(&mut self, mark: Mark) {
        self.len = mark.len;
        self.counts = mark.counts;
        self.comp_count = mark.comp_count;
    }

    /// Registers every label of a name already in the buffer (the question's) for compression.
    pub fn remember_name_at(&mut self, offset: usize) {
        let mut pos = offset;
        while self.buf[pos] != 0 && self.buf[pos] & 0xC0 == 0 {
            self.remember(pos);
            pos += 1 + self.buf[pos] as usize;
        }
    }

    fn remember(&mut self, offset: usize) {
        if offset <= POINTER_TARGET_MAX && self.comp_count < COMPRESSION_ENTRIES_MAX {
            self.comp[self.comp_count] = offset as u16;
            self.comp_count += 1;
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), Full> {
        let end = self.len + bytes.len();
        if end > self.limit {
            return Err(Full);
        }
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Whether the name at `offset` in the buffer equals the uncompressed `name` (case-insensitive).
    fn equals_at(&self, mut offset: usize, name: &[u8]) -> bool {
        let mut pos = 0;
        let mut hops = 0;
        loop {
            let b = self.buf[offset];
            if b & 0xC0 == 0xC0 {
                hops += 1;
                if hops > NAME_LABELS_MAX {
                    return false;
                }
                offset = (u16::from_be_bytes([b, self.buf[offset + 1]]) & 0x3FFF) as usize;
                continue;
            }
            let len = b as usize;
            if name[pos] as usize != len {
                return false;
            }
            if len == 0 {
                return true;
            }
            if !self.buf[offset + 1..offset + 1 + len]
                .eq_ignore_ascii_case(&name[pos + 1..pos + 1 + len])
            {
                return false;
            }
            offset += 1 + len;
            pos += 1 + len;
        }
    }

    /// Writes an uncompressed wire name, compressing against names written before.
    pub fn name(&mut self, name: &[u8], compress: bool) -> Result<(), Full> {
        if !compress {
            return self.put(name);
        }
        let mut pos = 0;
        while name[pos] != 0 {
            let suffix = &name[pos..];
            let found = self.comp[..self.comp_count]
                .iter()
                .copied()
                .find(|&off| self.equals_at(off as usize, suffix));
            if let Some(off) = found {
                return self.pointer_after_prefix(name, pos, off);
            }
            pos += 1 + name[pos] as usize;
        }
        let start = self.len;
        self.put(name)?;
        let mut p = 0;
        while name[p] != 0 {
            self.remember(start + p);
            p += 1 + name[p] as usize;
        }
        Ok(())
    }

    fn pointer_after_prefix(
        &mut self,
        name: &[u8],
        prefix_len: usize,
        target: u16,
    ) -> Result<(), Full> {
        let start = self.len;
        self.put(&name[..prefix_len])?;
        self.put(&(0xC000 | target).to_be_bytes())?;
        let mut p = 0;
        while p < prefix_len {
            self.remember(start + p);
            p += 1 + name[p] as usize;
        }
        Ok(())
    }

    /// A pointer to a name already in the buffer (e.g. 12 for the question name).
    pub fn pointer(&mut self, offset: u16) -> Result<(), Full> {
        self.put(&(0xC000 | offset).to_be_bytes())
    }

    /// Writes one record. `owner` is an uncompressed wire name, or `None` to point at the
    /// question name. RDATA names of RFC 1035 types are compressed (RFC 3597 §4).
    pub fn record(
        &mut self,
        section: Section,
        owner: Option<&[u8]>,
        rtype: RType,
        class: u16,
        ttl: u32,
        rdata: &[u8],
    ) -> Result<(), Full> {
        match owner {
            Some(name) => self.name(name, true)?,
            None => self.pointer(crate::query::HEADER_BYTES as u16)?,
        }
        self.put(&rtype.0.to_be_bytes())?;
        self.put(&class.to_be_bytes())?;
        self.put(&ttl.to_be_bytes())?;
        let rdlen_at = self.len;
        self.put(&[0, 0])?;
        if rtype.rdata_names_compressible() {
            let mut spans = [(0, 0); 2];
            let n = crate::rdata::rdata_name_spans(rtype, rdata, &mut spans);
            let mut at = 0;
            for &(offset, len) in &spans[..n] {
                self.put(&rdata[at..offset])?;
                self.name(&rdata[offset..offset + len], true)?;
                at = offset + len;
            }
            self.put(&rdata[at..])?;
        } else {
            self.put(rdata)?;
        }
        let rdlen = (self.len - rdlen_at - 2) as u16;
        self.buf[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        self.counts[section as usize] += 1;
        Ok(())
    }

    /// Raw bytes (used for the OPT record, whose room the caller reserved).
    pub fn raw(&mut self, section: Section, bytes: &[u8]) -> Result<(), Full> {
        self.put(bytes)?;
        self.counts[section as usize] += 1;
        Ok(())
    }
}

//! The storage a runtime gives the core: blob bytes, their outboard and what is verified.

use std::collections::BTreeMap;

use super::groups::GroupSet;
use super::hash::{compute_outboard, group_count, outboard_size, BlobHash, GROUP_SIZE};

/// Why a storage call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The blob (or the requested part of it) is not there.
    #[error("not found")]
    NotFound,
    /// Not enough space for a blob of this size.
    #[error("not enough space")]
    NoSpace,
    /// Any other failure (I/O), with a message for logs.
    #[error("storage: {0}")]
    Io(String),
}

/// Blob storage, implemented by the embedder (files for the app, [`MemStore`] for tests).
///
/// All methods are synchronous and called from inside the core's inputs. A blob has its
/// bytes (`size` of them) and a pre-order *outboard*: 64-byte tree nodes in slots
/// `0..outboard_size(size) / 64` (see [`compute_outboard`]). The core writes only data it
/// has verified against the root hash, one whole chunk group at a time.
pub trait BlobStore {
    /// Size of a *complete* blob this store can serve, `None` if it has none.
    fn complete_size(&self, hash: &BlobHash) -> Option<u64>;

    /// Reads outboard slot `slot` (left ‖ right child hashes) of a complete blob.
    fn read_parent(&mut self, hash: &BlobHash, slot: u64) -> Result<[u8; 64], StoreError>;

    /// Fills `buf` with the blob's bytes at `offset` (always inside the blob).
    fn read_data(&mut self, hash: &BlobHash, offset: u64, buf: &mut [u8])
        -> Result<(), StoreError>;

    /// Prepares to receive blob `hash` of `size` bytes (creates or reopens the partial
    /// file, checks free space) and returns the groups already verified and written,
    /// so a download resumes with only the missing ones.
    fn open_partial(&mut self, hash: &BlobHash, size: u64) -> Result<GroupSet, StoreError>;

    /// Stores a verified outboard node of a partial blob.
    fn write_parent(
        &mut self,
        hash: &BlobHash,
        slot: u64,
        pair: &[u8; 64],
    ) -> Result<(), StoreError>;

    /// Stores the verified bytes of chunk group `group` (`data` is the whole group) and
    /// records the group as verified, so [`BlobStore::open_partial`] reports it after a
    /// restart. Record it only once the bytes are written: a group lost in a crash is
    /// simply fetched again.
    fn write_group(&mut self, hash: &BlobHash, group: u64, data: &[u8]) -> Result<(), StoreError>;

    /// Every group is verified: the blob is complete and may be served.
    fn finish(&mut self, hash: &BlobHash) -> Result<(), StoreError>;
}

#[derive(Debug, Clone)]
struct MemBlob {
    size: u64,
    data: Vec<u8>,
    outboard: Vec<u8>,
    verified: GroupSet,
    complete: bool,
}

/// A [`BlobStore`] in memory, for tests and simulations.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    blobs: BTreeMap<BlobHash, MemBlob>,
    /// Largest blob [`BlobStore::open_partial`] accepts (a stand-in for free space).
    pub capacity: Option<u64>,
    /// Chunk groups written with [`BlobStore::write_group`] since creation.
    pub groups_written: u64,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a complete blob (computing its outboard) and returns its hash.
    pub fn insert(&mut self, data: &[u8]) -> BlobHash {
        let size = data.len() as u64;
        let mut outboard = vec![0u8; outboard_size(size) as usize];
        let hash = compute_outboard(data, size, |slot, pair| {
            outboard[slot as usize * 64..][..64].copy_from_slice(pair);
            Ok(())
        })
        .expect("in-memory reads do not fail");
        let verified = std::iter::once(0..group_count(size)).collect();
        self.blobs.insert(
            hash,
            MemBlob {
                size,
                data: data.to_vec(),
                outboard,
                verified,
                complete: true,
            },
        );
        hash
    }

    /// The bytes of a blob (complete or partial; unverified parts are zeros).
    pub fn data(&self, hash: &BlobHash) -> Option<&[u8]> {
        self.blobs.get(hash).map(|b| &b.data[..])
    }

    /// Whether the blob is complete.
    pub fn is_complete(&self, hash: &BlobHash) -> bool {
        self.blobs.get(hash).is_some_and(|b| b.complete)
    }

    /// The groups verified so far.
    pub fn verified(&self, hash: &BlobHash) -> GroupSet {
        self.blobs
            .get(hash)
            .map(|b| b.verified.clone())
            .unwrap_or_default()
    }

    /// Removes a blob.
    pub fn remove(&mut self, hash: &BlobHash) {
        self.blobs.remove(hash);
    }

    fn blob(&mut self, hash: &BlobHash) -> Result<&mut MemBlob, StoreError> {
        self.blobs.get_mut(hash).ok_or(StoreError::NotFound)
    }
}

impl BlobStore for MemStore {
    fn complete_size(&self, hash: &BlobHash) -> Option<u64> {
        self.blobs.get(hash).filter(|b| b.complete).map(|b| b.size)
    }

    fn read_parent(&mut self, hash: &BlobHash, slot: u64) -> Result<[u8; 64], StoreError> {
        let b = self.blob(hash)?;
        let at = usize::try_from(slot).map_err(|_| StoreError::NotFound)? * 64;
        let bytes = b.outboard.get(at..at + 64).ok_or(StoreError::NotFound)?;
        Ok(bytes.try_into().expect("64 bytes"))
    }

    fn read_data(
        &mut self,
        hash: &BlobHash,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), StoreError> {
        let b = self.blob(hash)?;
        let at = offset as usize;
        let src = b.data.get(at..at + buf.len()).ok_or(StoreError::NotFound)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn open_partial(&mut self, hash: &BlobHash, size: u64) -> Result<GroupSet, StoreError> {
        if self.capacity.is_some_and(|c| size > c) {
            return Err(StoreError::NoSpace);
        }
        let b = self.blobs.entry(*hash).or_insert_with(|| MemBlob {
            size,
            data: vec![0; size as usize],
            outboard: vec![0; outboard_size(size) as usize],
            verified: GroupSet::new(),
            complete: false,
        });
        if b.size != size {
            return Err(StoreError::Io("size differs from the partial blob".into()));
        }
        Ok(b.verified.clone())
    }

    fn write_parent(
        &mut self,
        hash: &BlobHash,
        slot: u64,
        pair: &[u8; 64],
    ) -> Result<(), StoreError> {
        let b = self.blob(hash)?;
        let at = slot as usize * 64;
        b.outboard
            .get_mut(at..at + 64)
            .ok_or(StoreError::NotFound)?
            .copy_from_slice(pair);
        Ok(())
    }

    fn write_group(&mut self, hash: &BlobHash, group: u64, data: &[u8]) -> Result<(), StoreError> {
        let b = self.blob(hash)?;
        let at = (group * GROUP_SIZE) as usize;
        b.data
            .get_mut(at..at + data.len())
            .ok_or(StoreError::NotFound)?
            .copy_from_slice(data);
        b.verified.insert(group..group + 1);
        self.groups_written += 1;
        Ok(())
    }

    fn finish(&mut self, hash: &BlobHash) -> Result<(), StoreError> {
        self.blob(hash)?.complete = true;
        Ok(())
    }
}

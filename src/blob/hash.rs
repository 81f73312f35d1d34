//! Hash layout: BLAKE3 root hash, 16 KiB chunk groups, pre-order outboard.

use std::fmt;
use std::io::Read;
use std::ops::Range;

use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};

/// BLAKE3 chunks (1 KiB each) per chunk group.
pub const GROUP_CHUNKS: u64 = 16;
/// Bytes per chunk group: the unit of verification, transfer and resume.
pub const GROUP_SIZE: u64 = 1024 * GROUP_CHUNKS;
/// `bao-tree` block size matching [`GROUP_SIZE`] (2^4 chunks).
pub(crate) const BLOCK: BlockSize = BlockSize::from_chunk_log(4);

/// A blob's name: the BLAKE3 hash of its bytes (the standard BLAKE3 hash, so
/// `b3sum` prints the same value).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobHash(pub [u8; 32]);

impl BlobHash {
    /// The BLAKE3 hash of `data` (for small blobs and tests; use [`compute_outboard`]
    /// for files).
    pub fn of(data: &[u8]) -> Self {
        BlobHash(*blake3::hash(data).as_bytes())
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from(self.0).to_hex().to_string()
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Number of chunk groups of a blob of `size` bytes (an empty blob has one, empty).
pub fn group_count(size: u64) -> u64 {
    size.div_ceil(GROUP_SIZE).max(1)
}

/// Size in bytes of a blob's pre-order outboard (64 bytes per stored tree node).
pub fn outboard_size(size: u64) -> u64 {
    tree(size).outboard_size()
}

/// Hashes `size` bytes from `data` and hands each tree node above the chunk groups to
/// `save(slot, left ‖ right)`: the pre-order outboard is `slot * 64 .. slot * 64 + 64`
/// for every slot, [`outboard_size`] bytes in all (see [`BlobStore::write_parent`]).
///
/// This is how an embedder prepares a local file for serving. It reads only from the
/// reader it is given; the core itself never opens a file.
///
/// [`BlobStore::write_parent`]: super::BlobStore::write_parent
pub fn compute_outboard(
    data: impl Read,
    size: u64,
    save: impl FnMut(u64, &[u8; 64]) -> std::io::Result<()>,
) -> std::io::Result<BlobHash> {
    struct Sink<F>(BaoTree, F);
    impl<F: FnMut(u64, &[u8; 64]) -> std::io::Result<()>> bao_tree::io::sync::OutboardMut for Sink<F> {
        fn save(
            &mut self,
            node: bao_tree::TreeNode,
            pair: &(blake3::Hash, blake3::Hash),
        ) -> std::io::Result<()> {
            let Some(slot) = self.0.pre_order_offset(node) else {
                return Ok(());
            };
            let mut buf = [0u8; 64];
            buf[..32].copy_from_slice(pair.0.as_bytes());
            buf[32..].copy_from_slice(pair.1.as_bytes());
            (self.1)(slot, &buf)
        }
        fn sync(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let t = tree(size);
    let hash = bao_tree::io::sync::outboard(data, t, Sink(t, save))?;
    Ok(BlobHash(*hash.as_bytes()))
}

pub(crate) fn tree(size: u64) -> BaoTree {
    BaoTree::new(size, BLOCK)
}

/// Chunk ranges of the groups `groups` in a blob of `groups_total` groups; a range
/// reaching the last group is open-ended, as `bao-tree` expects.
pub(crate) fn chunk_ranges(groups: Range<u64>, groups_total: u64) -> ChunkRanges {
    let start = ChunkNum(groups.start * GROUP_CHUNKS);
    if groups.end >= groups_total {
        ChunkRanges::from(start..)
    } else {
        ChunkRanges::from(start..ChunkNum(groups.end * GROUP_CHUNKS))
    }
}

/// Chaining value of a leaf (one chunk group's bytes starting at `start_chunk`).
pub(crate) fn leaf_cv(start_chunk: u64, data: &[u8], is_root: bool) -> [u8; 32] {
    use blake3::hazmat::HasherExt;
    if is_root {
        *blake3::hash(data).as_bytes()
    } else {
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(start_chunk * 1024);
        hasher.update(data);
        hasher.finalize_non_root()
    }
}

/// Chaining value of a parent node from its children's.
pub(crate) fn parent_cv(left: &[u8; 32], right: &[u8; 32], is_root: bool) -> [u8; 32] {
    use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, Mode};
    if is_root {
        *merge_subtrees_root(left, right, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(left, right, Mode::Hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outboard_root_is_the_blake3_hash() {
        for size in [0usize, 1, 1024, 16384, 16385, 100_000] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut ob = vec![0u8; outboard_size(size as u64) as usize];
            let h = compute_outboard(&data[..], size as u64, |slot, pair| {
                ob[slot as usize * 64..][..64].copy_from_slice(pair);
                Ok(())
            })
            .unwrap();
            assert_eq!(h, BlobHash::of(&data), "size {size}");
            assert_eq!(ob.len() as u64, outboard_size(size as u64));
        }
        assert_eq!(group_count(0), 1);
        assert_eq!(group_count(GROUP_SIZE), 1);
        assert_eq!(group_count(GROUP_SIZE + 1), 2);
    }
}

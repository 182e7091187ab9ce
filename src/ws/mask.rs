//! Payload masking (RFC 6455 5.3), the one hot loop of the decoder: XOR with a 4-byte key.

/// Bytes masked per step of the wide loop. 32 is one AVX2 register or two SSE2 ones; the loop is
/// written over fixed-size arrays so the compiler vectorises it without `unsafe`.
const WIDE: usize = 32;

/// XORs `buf` with `mask`, in place. `offset` is the position of `buf[0]` within the frame payload,
/// so a payload split across reads can be unmasked piece by piece. Masking twice is the identity,
/// so the same function masks (client side) and unmasks (server side).
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let key = rotate(mask, offset);
    let wide = [key; WIDE / 4];
    let wide = wide.as_flattened();
    let (chunks, tail) = buf.as_chunks_mut::<WIDE>();
    for chunk in chunks {
        for (byte, k) in chunk.iter_mut().zip(wide) {
            *byte ^= k;
        }
    }
    // The tail starts at a multiple of WIDE, itself a multiple of 4, so the key stays aligned with
    // it: whole 4-byte words first (one 32-bit XOR each), then the last 0-3 bytes.
    let (words, bytes) = tail.as_chunks_mut::<4>();
    for word in words {
        for (byte, k) in word.iter_mut().zip(key) {
            *byte ^= k;
        }
    }
    for (byte, k) in bytes.iter_mut().zip(key) {
        *byte ^= k;
    }
}

/// The key as seen from payload position `offset`.
fn rotate(mask: [u8; 4], offset: usize) -> [u8; 4] {
    let mut key = mask;
    key.rotate_left(offset % 4);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, byte) in buf.iter_mut().enumerate() {
            *byte ^= mask[(offset + i) % 4];
        }
    }

    #[test]
    fn matches_the_bytewise_definition_for_every_length_and_offset() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..100 {
            for offset in 0..8 {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut fast = data.clone();
                let mut slow = data.clone();
                apply_mask(&mut fast, mask, offset);
                naive(&mut slow, mask, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn piecewise_equals_whole() {
        let mask = [1, 2, 3, 250];
        let data: Vec<u8> = (0..=255).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, mask, 0);
        for split in 0..data.len() {
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, split);
            assert_eq!(pieces, whole, "split {split}");
        }
    }
}

//! `.npy` headers: the bytes that make raw C-order data a file `numpy.load` (and its
//! `mmap_mode='r'`) reads — used by the view's `arrays/` and by named slices.
//! Format 1.0 when the header fits 65535 bytes, else 2.0; the total header length is padded
//! to a multiple of 64 so the data starts aligned.

/// The header of an `.npy` file holding a C-order array.
pub fn header(descr: &str, shape: &[u64]) -> Vec<u8> {
    let dims = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    for (major, len_bytes) in [(1u8, 2usize), (2, 4)] {
        let prefix = 6 + 2 + len_bytes;
        let unpadded = prefix + dict.len() + 1;
        let total = unpadded.div_ceil(64) * 64;
        let hlen = total - prefix;
        if major == 1 && hlen > u16::MAX as usize {
            continue;
        }
        let mut h = Vec::with_capacity(total);
        h.extend_from_slice(b"\x93NUMPY");
        h.extend_from_slice(&[major, 0]);
        if major == 1 {
            h.extend_from_slice(&(hlen as u16).to_le_bytes());
        } else {
            h.extend_from_slice(&(hlen as u32).to_le_bytes());
        }
        h.extend_from_slice(dict.as_bytes());
        h.resize(total - 1, b' ');
        h.push(b'\n');
        return h;
    }
    unreachable!("a 2.0 header holds any shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_64_byte_aligned_and_name_dtype_and_shape() {
        for shape in [&[][..], &[5][..], &[10, 4, 8][..]] {
            let h = header("<u2", shape);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
            assert_eq!(u16::from_le_bytes([h[8], h[9]]) as usize, h.len() - 10);
            let text = String::from_utf8_lossy(&h[10..]);
            assert!(text.contains("'descr': '<u2'") && text.ends_with('\n'));
        }
        assert!(String::from_utf8_lossy(&header("<f8", &[5])).contains("'shape': (5,)"));
        assert!(String::from_utf8_lossy(&header("<f8", &[10, 4, 8])).contains("'shape': (10, 4, 8)"));
    }
}

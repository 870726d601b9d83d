//! Unit tests of `slices`.

use super::*;

#[test]
fn header_round_trips_and_aligns_data_to_64() {
    for shape in [vec![7usize], vec![3, 4], vec![0, 2, 5]] {
        let h = NpyHeader::encode(Dtype::F32, &shape);
        assert_eq!(h.len() % 64, 0);
        let p = NpyHeader::parse(Path::new("x.npy"), &h).unwrap();
        assert_eq!(p.shape, shape);
        assert_eq!(p.dtype, Dtype::F32);
        assert_eq!(p.data_offset, h.len() as u64);
    }
}

#[test]
fn names_written_by_two_writers_read_back_zero_copy() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.npy");
    let w = SlicesWriter::create::<u32>(&p, &[2], 10).unwrap();
    w.write("a", 0, &[1u32, 2, 3, 4]).unwrap();
    let w2 = SlicesWriter::open(&p).unwrap();
    w2.write("b", 5, &[9u32, 9]).unwrap();
    let s = Slices::<u32>::open(&p).unwrap();
    assert_eq!(&s["a"], &[1, 2, 3, 4]);
    assert_eq!(&s["b"], &[9, 9]);
    assert_eq!(s.names().collect::<Vec<_>>(), ["a", "b"]);
    assert!(s.get("c").is_none());
    assert!(Slices::<f32>::open(&p).is_err());
    assert!(w.write_rows(9, &[1u32, 2, 3, 4]).is_err());
    assert!(w.write_rows(0, &[1u32]).is_err());
}

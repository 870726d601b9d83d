//! Every raw libhdf5 call smdfs makes beyond the `hdf5` crate's safe API — a dataset's fill
//! value, whole-dataset writes, row hyperslabs read or written, raw attribute writes, and the
//! dimension-scale calls of libhdf5's high-level library (`H5DSset_scale`,
//! `H5DSattach_scale`, in `libhdf5_hl` beside `libhdf5`) — and the one mapping of
//! libhdf5 failures to [`Error::Hdf5`]. Each function checks the buffer against the
//! dataset's selection before calling libhdf5, so none can read or write past a buffer, and
//! each runs under the `hdf5` crate's global lock.

use std::path::Path;

use hdf5::Datatype;
use hdf5_sys::h5d::{H5Dget_space, H5Dread, H5Dwrite};
use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5p::H5P_DEFAULT;
use hdf5_sys::h5s::{H5S_seloper_t, H5Sclose, H5Screate_simple, H5Sselect_hyperslab, H5S_ALL};
use hdf5_sys::h5t::H5Tget_size;

use crate::error::Error;

#[link(name = "hdf5_hl")]
extern "C" {
    fn H5DSset_scale(dsid: hid_t, dimname: *const std::ffi::c_char) -> hdf5_sys::h5::herr_t;
    fn H5DSattach_scale(did: hid_t, dsid: hid_t, idx: std::ffi::c_uint) -> hdf5_sys::h5::herr_t;
}

/// Makes dataset `ds` a dimension scale named `name` (its `CLASS` and `NAME` attributes).
/// False if libhdf5 refuses or `name` holds a NUL.
pub(crate) fn set_scale(ds: hid_t, name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else { return false };
    // SAFETY: a live dataset id and a NUL-terminated name that outlives the call.
    hdf5::sync::sync(|| unsafe { H5DSset_scale(ds, name.as_ptr()) >= 0 })
}

/// Attaches dimension scale `scale` to axis `axis` of dataset `ds` (the `DIMENSION_LIST` of
/// `ds` and the `REFERENCE_LIST` of `scale`). False if libhdf5 refuses.
pub(crate) fn attach_scale(ds: hid_t, scale: hid_t, axis: u32) -> bool {
    // SAFETY: live dataset ids.
    hdf5::sync::sync(|| unsafe { H5DSattach_scale(ds, scale, axis) >= 0 })
}

/// Writes an attribute's whole value from `bytes` with `mtype` as the memory type (the
/// attribute's own type). The caller sized the attribute for exactly `bytes`; false if the
/// length does not match `elements * size(mtype)` or libhdf5 fails.
pub(crate) fn write_attr_bytes(attr: hid_t, mtype: hid_t, elements: usize, bytes: &[u8]) -> bool {
    hdf5::sync::sync(|| {
        // SAFETY: a live type id.
        let elem = unsafe { H5Tget_size(mtype) };
        if elem == 0 || elements.checked_mul(elem) != Some(bytes.len()) {
            return false;
        }
        if elements == 0 {
            return true; // an empty array attribute has nothing to write
        }
        // SAFETY: live ids; `bytes` holds exactly the attribute's elements (checked above).
        unsafe { hdf5_sys::h5a::H5Awrite(attr, mtype, bytes.as_ptr().cast()) >= 0 }
    })
}

/// Maps an `hdf5` crate error to [`Error::Hdf5`] naming the file and the object.
pub(crate) fn h5err(file: &Path, object: &str) -> impl FnOnce(hdf5::Error) -> Error {
    let (path, object) = (file.to_path_buf(), object.to_string());
    move |e| Error::Hdf5 { path, object, why: e.to_string() }
}

/// An [`Error::Hdf5`] naming the file and the object.
pub(crate) fn fail(file: &Path, object: &str, why: impl std::fmt::Display) -> Error {
    Error::Hdf5 { path: file.to_path_buf(), object: object.to_string(), why: why.to_string() }
}

/// Sets a dataset-creation property list's fill value; `fill` must hold one element of
/// `dtype`. False if libhdf5 refuses (or the size is wrong).
pub(crate) fn set_fill_value(dcpl: &hdf5::plist::DatasetCreate, dtype: &Datatype, fill: &[u8]) -> bool {
    if fill.len() != dtype.size() {
        return false;
    }
    // SAFETY: live ids; `fill` holds exactly one element of `dtype` (checked above).
    hdf5::sync::sync(|| unsafe { hdf5_sys::h5p::H5Pset_fill_value(dcpl.id(), dtype.id(), fill.as_ptr().cast()) >= 0 })
}

/// The buffer of a row transfer: rows read into it, or written from it.
pub(crate) enum Rows<'a> {
    /// Read the selected rows into this buffer.
    Read(&'a mut [u8]),
    /// Write the selected rows from this buffer.
    Write(&'a [u8]),
}

/// Transfers rows `row..row + rows` of a dataset of `shape` (the whole dataset when it is a
/// scalar or the range covers it) with `mtype` as the memory type (the file's own type: no
/// conversion). The buffer must hold exactly the selected elements; false if it does not or
/// libhdf5 fails.
pub(crate) fn transfer_rows(ds: hid_t, mtype: hid_t, shape: &[u64], row: u64, rows: u64, buf: Rows<'_>) -> bool {
    let elements: Option<u64> = shape.iter().skip(1).try_fold(rows, |acc, &d| acc.checked_mul(d));
    // Raw pointers taken from the exclusive or shared borrow each direction needs.
    let (read_to, write_from, len) = match buf {
        Rows::Read(b) => (b.as_mut_ptr(), std::ptr::null(), b.len() as u64),
        Rows::Write(b) => (std::ptr::null_mut(), b.as_ptr(), b.len() as u64),
    };
    hdf5::sync::sync(|| {
        // SAFETY: `mtype` is a live type id.
        let elem = unsafe { H5Tget_size(mtype) } as u64;
        let want = if shape.is_empty() { Some(elem) } else { elements.and_then(|e| e.checked_mul(elem)) };
        if elem == 0 || want != Some(len) || (!shape.is_empty() && row.checked_add(rows).is_none_or(|e| e > shape[0])) {
            return false;
        }
        // SAFETY: live ids; the buffer behind the pointer holds exactly the selected elements
        // (checked above) and outlives this call.
        let io = |mspace: hid_t, fspace: hid_t| unsafe {
            if read_to.is_null() {
                H5Dwrite(ds, mtype, mspace, fspace, H5P_DEFAULT, write_from.cast())
            } else {
                H5Dread(ds, mtype, mspace, fspace, H5P_DEFAULT, read_to.cast())
            }
        };
        if shape.is_empty() || (row == 0 && rows == shape[0]) {
            return io(H5S_ALL, H5S_ALL) >= 0;
        }
        let mut start = vec![0u64; shape.len()];
        start[0] = row;
        let mut count = shape.to_vec();
        count[0] = rows;
        // SAFETY: a live dataset id; `start`/`count` have the dataset's rank and lie inside it
        // (checked above); every space opened here is closed before returning.
        unsafe {
            let fspace = H5Dget_space(ds);
            let mspace = H5Screate_simple(count.len() as i32, count.as_ptr(), std::ptr::null());
            let ok = fspace >= 0
                && mspace >= 0
                && H5Sselect_hyperslab(
                    fspace,
                    H5S_seloper_t::H5S_SELECT_SET,
                    start.as_ptr(),
                    std::ptr::null(),
                    count.as_ptr(),
                    std::ptr::null(),
                ) >= 0
                && io(mspace, fspace) >= 0;
            if mspace >= 0 {
                H5Sclose(mspace);
            }
            if fspace >= 0 {
                H5Sclose(fspace);
            }
            ok
        }
    })
}

//! The HDF5 skeleton behind the view's `run.h5`: a real HDF5 file written by libhdf5 whose
//! datasets' bytes are served from elsewhere.
//!
//! [`build_skeleton`] owns the skeleton file and its invariants: every dataset is contiguous,
//! allocated early and never filled, so libhdf5 reserves each dataset's extent without writing
//! it and the file stays sparse (extents are holes, apart from datasets given literal
//! [`DatasetPlan::data`]). File-access alignment (4096, threshold 1) puts every non-empty
//! dataset on a page boundary, and the default (earliest) format version bounds keep the file
//! readable by HDF5 1.10 tools. The returned [`SkeletonLayout`] says where each dataset's raw
//! bytes start (`H5Dget_offset`) and how long they are; extents never overlap, and
//! [`SkeletonLayout::file_size`] is at least libhdf5's end-of-allocation address and every
//! extent's end, so a view serving that many bytes satisfies libhdf5's EOA check. Bytes outside
//! extents (superblock, object headers, attributes, heaps) are the skeleton's own.
//!
//! Element types follow [`Dtype`]: little-endian integers and IEEE floats; [`Dtype::Bool`] is
//! an HDF5 enum of `int8 {FALSE = 0, TRUE = 1}`, which h5py reads as numpy `bool`. Strings are
//! never variable-length in datasets (their bytes could not be served raw): [`text_dataset`]
//! stores text as a `u8` array. String attributes are variable-length UTF-8 (h5py reads `str`).
//!
//! All libhdf5 calls run under the `hdf5` crate's global lock, so callers on any thread are safe.

use std::path::Path;

use hdf5::dataset::{AllocTime, DatasetCreate, FillTime, Layout};
use hdf5::file::FileCloseDegree;
use hdf5::types::{FloatSize, IntSize, TypeDescriptor, VarLenUnicode};
use hdf5::{Datatype, Location};

use crate::error::{Error, Result};
use crate::h5::ffi;
use crate::model::dtype::Dtype;

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// A signed 64-bit integer scalar.
    I64(i64),
    /// An unsigned 64-bit integer scalar.
    U64(u64),
    /// A double-precision scalar.
    F64(f64),
    /// A variable-length UTF-8 string (must not contain NUL).
    Str(String),
    /// One little-endian element of a [`Dtype`], stored with the dtype's own file type as a
    /// scalar (CF's `_FillValue` must have its variable's type).
    Typed(Dtype, Vec<u8>),
    /// Little-endian elements of a [`Dtype`] as a 1-D array (`flag_values`,
    /// `_Netcdf4Coordinates`).
    Array(Dtype, Vec<u8>),
}

/// One dataset to place in the skeleton.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetPlan {
    /// Absolute path such as `"/energy"` or `"/det/image"`; intermediate groups are created.
    pub path: String,
    /// Element type.
    pub dtype: Dtype,
    /// Full shape, C order; `[]` is a scalar dataspace (one element).
    pub shape: Vec<u64>,
    /// Little-endian bytes of one element, stored as the dataset's fill value property.
    pub fill: Option<Vec<u8>>,
    /// Literal contents (little-endian, C order) written by libhdf5; `None` leaves the extent
    /// unwritten (a hole, served from elsewhere).
    pub data: Option<Vec<u8>>,
    /// Attributes of the dataset.
    pub attrs: Vec<(String, AttrValue)>,
    /// Per axis, the absolute path of the dimension scale attached to it (a plan with
    /// [`DatasetPlan::scale`] set, or a [`Dimension`]); empty for no scales.
    pub dims: Vec<String>,
    /// Whether this (1-D) dataset is itself a dimension scale, named by its path's last
    /// segment (a netCDF coordinate variable such as `/timestamp`).
    pub scale: bool,
}

impl DatasetPlan {
    /// A plan with no fill value, no literal data, no attributes and no dimension scales.
    pub fn new(path: impl Into<String>, dtype: Dtype, shape: Vec<u64>) -> DatasetPlan {
        DatasetPlan {
            path: path.into(),
            dtype,
            shape,
            fill: None,
            data: None,
            attrs: Vec::new(),
            dims: Vec::new(),
            scale: false,
        }
    }

    /// Bytes of the dataset's raw data: `product(shape) * dtype.size()`.
    pub fn byte_size(&self) -> Result<u64> {
        self.shape
            .iter()
            .try_fold(self.dtype.size() as u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(&self.path, format!("shape {:?} overflows u64 bytes", self.shape)))
    }
}

/// A `u8` dataset of `text`'s UTF-8 bytes with attribute `encoding = "utf-8"`, written
/// literally. Readers decode it with `bytes(ds[()]).decode()`; empty text is a `[0]` dataset.
pub fn text_dataset(path: &str, text: &str) -> DatasetPlan {
    DatasetPlan {
        data: Some(text.as_bytes().to_vec()),
        attrs: vec![("encoding".into(), AttrValue::Str("utf-8".into()))],
        ..DatasetPlan::new(path, Dtype::U8, vec![text.len() as u64])
    }
}

/// A named dimension with no variable of its own (netCDF-4's "dimension but not a variable"):
/// an empty dimension-scale dataset that is never allocated, so it costs no bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dimension {
    /// Absolute path (`/det/image_dim1`); the dimension's name is its last segment.
    pub path: String,
    /// Length.
    pub len: u64,
}

/// What netCDF-4 stores as the `NAME` of a dimension that is not a variable; h5netcdf and
/// netCDF-C recognise it by this prefix.
const DIM_WITHOUT_VARIABLE: &str = "This is a netCDF dimension but not a netCDF variable.";

/// Where a dataset's raw bytes live in the skeleton.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetExtent {
    /// The plan's path.
    pub path: String,
    /// Byte offset of the first element (a multiple of 4096); 0 and meaningless when `size == 0`.
    pub offset: u64,
    /// Bytes of raw data: `product(shape) * dtype.size()`.
    pub size: u64,
}

impl DatasetExtent {
    /// One past the extent's last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }
}

/// The skeleton written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkeletonLayout {
    /// One extent per plan, in the plans' order.
    pub datasets: Vec<DatasetExtent>,
    /// Bytes to serve: at least the end-of-allocation address, the file's length on disk and
    /// every extent's end.
    pub file_size: u64,
}

/// Writes the skeleton file at `path` and returns its layout.
///
/// An existing file at `path` is unlinked first, so a reader holding it open keeps the old
/// bytes; on error a partial file may be left behind. Plans are checked (lengths of `fill` and
/// `data`, bool bytes 0 or 1) before the file is touched; libhdf5 failures (a path used twice,
/// say) are [`Error::Hdf5`] naming the file and the dataset. `dims` are the dimensions without
/// a variable that plans' [`DatasetPlan::dims`] name; see `write_dimensions` for the scales.
pub fn build_skeleton(
    path: &Path,
    plans: &[DatasetPlan],
    dims: &[Dimension],
    root_attrs: &[(String, AttrValue)],
) -> Result<SkeletonLayout> {
    let mut sizes = Vec::with_capacity(plans.len());
    for plan in plans {
        sizes.push(check_plan(plan)?);
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    let datasets = hdf5::sync::sync(|| write_file(path, plans, &sizes, dims, root_attrs))?;
    let on_disk = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    let file_size = datasets.iter().map(DatasetExtent::end).fold(on_disk, u64::max);
    Ok(SkeletonLayout { datasets, file_size })
}

/// Validates one plan and returns its byte size.
fn check_plan(plan: &DatasetPlan) -> Result<u64> {
    if plan.path.trim_matches('/').is_empty() {
        return Err(bad(&plan.path, "a dataset needs a non-root path".into()));
    }
    let size = plan.byte_size()?;
    let elem = plan.dtype.size();
    if let Some(fill) = &plan.fill {
        if fill.len() != elem {
            let why = format!("fill value has {} bytes, {} needs {elem}", fill.len(), plan.dtype.name());
            return Err(bad(&plan.path, why));
        }
    }
    if let Some(data) = &plan.data {
        if data.len() as u64 != size {
            let why = format!("data has {} bytes, shape {:?} needs {size}", data.len(), plan.shape);
            return Err(bad(&plan.path, why));
        }
    }
    if plan.dtype == Dtype::Bool {
        let bytes = plan.fill.iter().chain(plan.data.iter()).flatten();
        if bytes.into_iter().any(|&b| b > 1) {
            return Err(bad(&plan.path, "bool bytes must be 0 or 1".into()));
        }
    }
    Ok(size)
}

/// An [`Error::BadValue`] for the dataset at `path`.
fn bad(path: &str, why: String) -> Error {
    Error::BadValue { field: path.to_string(), why }
}

/// How errors about the skeleton file start.
const SKELETON: &str = "HDF5 skeleton";

/// An [`Error::Hdf5`] naming the skeleton file and the object.
fn h5fail(file: &Path, what: &str, why: impl std::fmt::Display) -> Error {
    ffi::fail(file, &format!("{SKELETON}: {what}"), why)
}

/// Maps an `hdf5` error to [`Error::Hdf5`] naming the skeleton file and the object.
fn h5err(file: &Path, what: &str) -> impl FnOnce(hdf5::Error) -> Error {
    ffi::h5err(file, &format!("{SKELETON}: {what}"))
}

/// The file type of a [`Dtype`] (little-endian; bool as enum int8 {FALSE, TRUE}); the skeleton
/// and `export` share it, so both files store the same types.
pub(crate) fn descriptor(dtype: Dtype) -> TypeDescriptor {
    use TypeDescriptor as T;
    match dtype {
        Dtype::Bool => T::Boolean,
        Dtype::I8 => T::Integer(IntSize::U1),
        Dtype::I16 => T::Integer(IntSize::U2),
        Dtype::I32 => T::Integer(IntSize::U4),
        Dtype::I64 => T::Integer(IntSize::U8),
        Dtype::U8 => T::Unsigned(IntSize::U1),
        Dtype::U16 => T::Unsigned(IntSize::U2),
        Dtype::U32 => T::Unsigned(IntSize::U4),
        Dtype::U64 => T::Unsigned(IntSize::U8),
        Dtype::F32 => T::Float(FloatSize::U4),
        Dtype::F64 => T::Float(FloatSize::U8),
    }
}

/// Creates the file and its datasets; runs under the library lock.
fn write_file(
    path: &Path,
    plans: &[DatasetPlan],
    sizes: &[u64],
    dims: &[Dimension],
    root_attrs: &[(String, AttrValue)],
) -> Result<Vec<DatasetExtent>> {
    let file = hdf5::File::with_options()
        .with_fapl(|p| p.alignment(1, 4096).fclose_degree(FileCloseDegree::Strong))
        .create(path)
        .map_err(h5err(path, "create"))?;
    write_attrs(SKELETON, path, "/", &file, root_attrs)?;
    let mut extents = Vec::with_capacity(plans.len());
    for (plan, &size) in plans.iter().zip(sizes) {
        let offset = create_dataset(path, &file, plan, size)?;
        extents.push(DatasetExtent { path: plan.path.clone(), offset, size });
    }
    write_dimensions(SKELETON, path, &file, plans, dims)?;
    file.close().map_err(h5err(path, "close"))?;
    Ok(extents)
}

/// Creates one dataset and returns its raw data offset (0 when it has no bytes).
fn create_dataset(path: &Path, file: &hdf5::File, plan: &DatasetPlan, size: u64) -> Result<u64> {
    let err = || h5err(path, &plan.path);
    let dtype = Datatype::from_descriptor(&descriptor(plan.dtype)).map_err(err())?;
    let dcpl = DatasetCreate::build()
        .layout(Layout::Contiguous)
        .alloc_time(Some(AllocTime::Early))
        .fill_time(FillTime::Never)
        .obj_track_times(false)
        .finish()
        .map_err(err())?;
    if let Some(fill) = &plan.fill {
        if !ffi::set_fill_value(&dcpl, &dtype, fill) {
            return Err(h5fail(path, &plan.path, "cannot set the fill value"));
        }
    }
    let shape: Vec<usize> = plan.shape.iter().map(|&d| d as usize).collect();
    let ds = file
        .new_dataset_builder()
        .set_dcpl(&dcpl)
        .no_chunk()
        .empty_as(&dtype)
        .shape(shape)
        .create(plan.path.as_str())
        .map_err(err())?;
    let offset =
        if size == 0 { 0 } else { ds.offset().ok_or_else(|| h5fail(path, &plan.path, "no raw data offset"))? };
    if let (Some(data), true) = (&plan.data, size > 0) {
        let rows = plan.shape.first().copied().unwrap_or(1);
        if !ffi::transfer_rows(ds.id(), dtype.id(), &plan.shape, 0, rows, ffi::Rows::Write(data)) {
            return Err(h5fail(path, &plan.path, "cannot write the data"));
        }
    }
    write_attrs(SKELETON, path, &plan.path, &ds, &plan.attrs)?;
    Ok(offset)
}

/// Writes scalar attributes on `loc` (strings variable-length UTF-8). `label` starts error
/// messages (`"HDF5 skeleton"`, `"export"`); shared by the skeleton and `export`.
pub(crate) fn write_attrs(
    label: &str,
    path: &Path,
    owner: &str,
    loc: &Location,
    attrs: &[(String, AttrValue)],
) -> Result<()> {
    hdf5::sync::sync(|| {
        for (name, value) in attrs {
            let what = format!("{owner} attribute {name:?}");
            let fail = |e: &dyn std::fmt::Display| ffi::fail(path, &format!("{label}: {what}"), e);
            let n = name.as_str();
            match value {
                AttrValue::I64(v) => loc.new_attr::<i64>().create(n).and_then(|a| a.write_scalar(v)),
                AttrValue::U64(v) => loc.new_attr::<u64>().create(n).and_then(|a| a.write_scalar(v)),
                AttrValue::F64(v) => loc.new_attr::<f64>().create(n).and_then(|a| a.write_scalar(v)),
                AttrValue::Str(s) => {
                    let v: VarLenUnicode = s.parse().map_err(|e| fail(&e))?;
                    loc.new_attr::<VarLenUnicode>().create(n).and_then(|a| a.write_scalar(&v))
                }
                AttrValue::Typed(dtype, bytes) | AttrValue::Array(dtype, bytes) => {
                    let elements = bytes.len() / dtype.size().max(1);
                    let t = Datatype::from_descriptor(&descriptor(*dtype)).map_err(|e| fail(&e))?;
                    let b = loc.new_attr_builder().empty_as(&t);
                    let a = match value {
                        AttrValue::Typed(..) => b.create(n),
                        _ => b.shape(elements).create(n),
                    }
                    .map_err(|e| fail(&e))?;
                    if !ffi::write_attr_bytes(a.id(), t.id(), elements, bytes) {
                        return Err(fail(&"cannot write the value"));
                    }
                    Ok(())
                }
            }
            .map_err(|e| fail(&e))?;
        }
        Ok(())
    })
}

/// Makes the plans' dimension scales and attaches them, as netCDF-4 files do, so xarray
/// (h5netcdf, netCDF4), h5py's `ds.dims` and kerchunk see named, shared dimensions: each plan
/// with [`DatasetPlan::scale`] becomes a scale named by its last path segment; each of `dims`
/// becomes an unallocated scale whose `NAME` marks it a dimension without a variable; every
/// scale gets a file-wide `_Netcdf4Dimid` (in order: scale plans, then `dims`) and every plan
/// with dimensions `_Netcdf4Coordinates` (its axes' dimids; a scalar `_Netcdf4Dimid` -1), which also tells netCDF-aware
/// readers (kerchunk) that only a `_FillValue` attribute, never the fill property, marks
/// missing values. Then every axis of every plan is attached to its scale. Shared by the
/// skeleton and `export`; `label` starts error messages.
pub(crate) fn write_dimensions(
    label: &str,
    path: &Path,
    file: &hdf5::File,
    plans: &[DatasetPlan],
    dims: &[Dimension],
) -> Result<()> {
    let fail = |what: &str, why: &dyn std::fmt::Display| ffi::fail(path, &format!("{label}: {what}"), why);
    let mut dimids: std::collections::HashMap<&str, i32> = std::collections::HashMap::new();
    hdf5::sync::sync(|| -> Result<()> {
        for plan in plans.iter().filter(|p| p.scale) {
            let name = plan.path.rsplit('/').next().unwrap_or(&plan.path);
            let ds = file.dataset(&plan.path).map_err(|e| fail(&plan.path, &e))?;
            if !ffi::set_scale(ds.id(), name) {
                return Err(fail(&plan.path, &"cannot make it a dimension scale"));
            }
            let id = dimids.len() as i32;
            dimids.insert(&plan.path, id);
            write_attrs(label, path, &plan.path, &ds, &[("_Netcdf4Dimid".into(), int32(id))])?;
        }
        for d in dims {
            let t = Datatype::from_descriptor(&descriptor(Dtype::F32)).map_err(|e| fail(&d.path, &e))?;
            let dcpl = DatasetCreate::build()
                .layout(Layout::Contiguous)
                .alloc_time(Some(AllocTime::Late))
                .fill_time(FillTime::Never)
                .obj_track_times(false)
                .finish()
                .map_err(|e| fail(&d.path, &e))?;
            let ds = file
                .new_dataset_builder()
                .set_dcpl(&dcpl)
                .no_chunk()
                .empty_as(&t)
                .shape(vec![d.len as usize])
                .create(d.path.as_str())
                .map_err(|e| fail(&d.path, &e))?;
            if !ffi::set_scale(ds.id(), &format!("{DIM_WITHOUT_VARIABLE}{:10}", d.len)) {
                return Err(fail(&d.path, &"cannot make it a dimension scale"));
            }
            let id = dimids.len() as i32;
            dimids.insert(&d.path, id);
            write_attrs(label, path, &d.path, &ds, &[("_Netcdf4Dimid".into(), int32(id))])?;
        }
        for plan in plans.iter().filter(|p| p.shape.is_empty()) {
            // A scalar has no dimensions to list, and netCDF-C refuses an empty
            // `_Netcdf4Coordinates`; netCDF-C and h5netcdf ignore `_Netcdf4Dimid` on a dataset
            // that is not a scale, so it is the scalar's netCDF-4 mark (kerchunk then takes
            // no fill from the fill property).
            let ds = file.dataset(&plan.path).map_err(|e| fail(&plan.path, &e))?;
            write_attrs(label, path, &plan.path, &ds, &[("_Netcdf4Dimid".into(), int32(-1))])?;
        }
        for plan in plans.iter().filter(|p| !p.dims.is_empty()) {
            if plan.dims.len() != plan.shape.len() {
                return Err(fail(&plan.path, &format!("{} dimensions for shape {:?}", plan.dims.len(), plan.shape)));
            }
            let ids: Vec<i32> = plan
                .dims
                .iter()
                .map(|d| dimids.get(d.as_str()).copied().ok_or_else(|| fail(&plan.path, &format!("no dimension {d}"))))
                .collect::<Result<_>>()?;
            let ds = file.dataset(&plan.path).map_err(|e| fail(&plan.path, &e))?;
            let ids = AttrValue::Array(Dtype::I32, ids.iter().flat_map(|v| v.to_le_bytes()).collect());
            write_attrs(label, path, &plan.path, &ds, &[("_Netcdf4Coordinates".into(), ids)])?;
            if plan.scale {
                continue; // a scale is its own dimension; libhdf5 attaches nothing to a scale
            }
            for (axis, d) in plan.dims.iter().enumerate() {
                let scale = file.dataset(d).map_err(|e| fail(d, &e))?;
                if !ffi::attach_scale(ds.id(), scale.id(), axis as u32) {
                    return Err(fail(&plan.path, &format!("cannot attach dimension scale {d} to axis {axis}")));
                }
            }
        }
        Ok(())
    })
}

/// A scalar int32 attribute value.
fn int32(value: i32) -> AttrValue {
    AttrValue::Typed(Dtype::I32, value.to_le_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdf5::types::VarLenUnicode;
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::sync::Mutex;

    /// Serializes the tests (libhdf5 is built without thread safety; the crate's lock covers
    /// single calls, this covers whole build-and-check sequences).
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn plan(path: &str, dtype: Dtype, shape: &[u64]) -> DatasetPlan {
        DatasetPlan::new(path, dtype, shape.to_vec())
    }

    fn extent<'a>(layout: &'a SkeletonLayout, path: &str) -> &'a DatasetExtent {
        layout.datasets.iter().find(|d| d.path == path).unwrap()
    }

    fn h5dump(args: &[&str]) -> String {
        let out = std::process::Command::new("h5dump").args(args).output().expect("run h5dump");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "h5dump {args:?} failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        text
    }

    #[test]
    fn bytes_written_at_the_offsets_read_back_through_libhdf5_and_h5dump() {
        let _g = serial();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.h5");
        let energy = DatasetPlan {
            fill: Some((-1.5f64).to_le_bytes().to_vec()),
            attrs: vec![("units".into(), AttrValue::Str("eV".into())), ("max".into(), AttrValue::F64(4.5))],
            ..plan("/energy", Dtype::F64, &[10])
        };
        let image =
            DatasetPlan { fill: Some(u16::MAX.to_le_bytes().to_vec()), ..plan("/det/image", Dtype::U16, &[10, 4, 8]) };
        let flag = DatasetPlan { fill: Some(vec![0]), ..plan("/_present/flag", Dtype::Bool, &[10]) };
        let n_events =
            DatasetPlan { data: Some(42u64.to_le_bytes().to_vec()), ..plan("/summary/n_events", Dtype::U64, &[]) };
        let plans = vec![
            energy,
            image,
            plan("/timestamp", Dtype::I64, &[10]),
            flag,
            plan("/empty", Dtype::F32, &[0]),
            n_events,
            text_dataset("/summary/name", "démo run"),
        ];
        let root = vec![
            ("smdfs_version".to_string(), AttrValue::U64(1)),
            ("first".to_string(), AttrValue::I64(-3)),
            ("title".to_string(), AttrValue::Str("a run".into())),
        ];
        let layout = build_skeleton(&path, &plans, &[], &root).unwrap();
        assert_eq!(layout.datasets.len(), plans.len());
        for (p, d) in plans.iter().zip(&layout.datasets) {
            assert_eq!(p.path, d.path);
            assert_eq!(d.size, p.byte_size().unwrap());
        }
        assert_eq!(extent(&layout, "/empty"), &DatasetExtent { path: "/empty".into(), offset: 0, size: 0 });

        // Fill every served extent with test bytes, as the view would.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let put = |p: &str, bytes: Vec<u8>| {
            let e = extent(&layout, p);
            assert_eq!(bytes.len() as u64, e.size, "{p}");
            f.write_all_at(&bytes, e.offset).unwrap();
        };
        put("/energy", (0..10).flat_map(|i| (i as f64 * 0.5).to_le_bytes()).collect());
        put("/det/image", (0..320u16).flat_map(|i| (i * 3).to_le_bytes()).collect());
        put("/timestamp", (0..10i64).flat_map(|i| (1000 + i).to_le_bytes()).collect());
        put("/_present/flag", (0..10u8).map(|i| i % 2).collect());
        drop(f);

        let file = hdf5::File::open(&path).unwrap();
        let ds = file.dataset("energy").unwrap();
        assert_eq!(ds.read_raw::<f64>().unwrap(), (0..10).map(|i| i as f64 * 0.5).collect::<Vec<_>>());
        assert_eq!(ds.fill_value().unwrap().unwrap().cast::<f64>().unwrap(), -1.5);
        assert_eq!(ds.attr("units").unwrap().read_scalar::<VarLenUnicode>().unwrap().as_str(), "eV");
        assert_eq!(ds.attr("max").unwrap().read_scalar::<f64>().unwrap(), 4.5);
        assert!(!ds.is_chunked());
        let image = file.dataset("/det/image").unwrap();
        assert_eq!(image.shape(), vec![10, 4, 8]);
        assert_eq!(image.read_raw::<u16>().unwrap(), (0..320u16).map(|i| i * 3).collect::<Vec<_>>());
        assert_eq!(image.fill_value().unwrap().unwrap().cast::<u16>().unwrap(), u16::MAX);
        let ts = file.dataset("timestamp").unwrap().read_raw::<i64>().unwrap();
        assert_eq!(ts, (1000..1010).collect::<Vec<i64>>());
        let flag = file.dataset("_present/flag").unwrap();
        assert_eq!(flag.read_raw::<bool>().unwrap(), (0..10).map(|i| i % 2 == 1).collect::<Vec<_>>());
        assert!(!flag.fill_value().unwrap().unwrap().cast::<bool>().unwrap());
        let empty = file.dataset("empty").unwrap();
        assert_eq!((empty.shape(), empty.is_chunked()), (vec![0], false));
        assert_eq!(file.dataset("summary/n_events").unwrap().read_scalar::<u64>().unwrap(), 42);
        let name = file.dataset("summary/name").unwrap().read_raw::<u8>().unwrap();
        assert_eq!(String::from_utf8(name).unwrap(), "démo run");
        assert_eq!(file.attr("smdfs_version").unwrap().read_scalar::<u64>().unwrap(), 1);
        assert_eq!(file.attr("first").unwrap().read_scalar::<i64>().unwrap(), -3);
        assert_eq!(file.attr("title").unwrap().read_scalar::<VarLenUnicode>().unwrap().as_str(), "a run");
        drop((ds, image, flag, empty));
        file.close().unwrap();

        let p = path.to_str().unwrap();
        let out = h5dump(&["-d", "/energy", p]);
        assert!(out.contains("0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5"), "{out}");
        let out = h5dump(&["-d", "/_present/flag", p]);
        assert!(out.contains("FALSE, TRUE, FALSE, TRUE"), "{out}");
        let out = h5dump(&[p]); // the whole file: every dataset, group and attribute
        assert!(out.contains("1000, 1001, 1002") && out.contains("(0): 42"), "{out}");
    }

    extern "C" {
        fn H5Fget_eoa(file_id: hdf5_sys::h5i::hid_t, eoa: *mut hdf5_sys::h5::haddr_t) -> hdf5_sys::h5::herr_t;
    }

    /// The end-of-allocation address libhdf5 records in the file, read back by reopening it.
    fn eoa(path: &Path) -> u64 {
        let file = hdf5::File::open(path).unwrap();
        let mut eoa = 0;
        // SAFETY: a live file id and a valid out pointer, under the library lock.
        let rc = hdf5::sync::sync(|| unsafe { H5Fget_eoa(file.id(), &mut eoa) });
        assert!(rc >= 0);
        eoa
    }

    #[test]
    fn a_one_gib_dataset_leaves_the_skeleton_sparse() {
        let _g = serial();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.h5");
        let plans = [
            plan("/small", Dtype::U8, &[3]),
            DatasetPlan { fill: Some(f64::NAN.to_le_bytes().to_vec()), ..plan("/big", Dtype::F64, &[1 << 27]) },
            DatasetPlan { data: Some(7i32.to_le_bytes().to_vec()), ..plan("/after", Dtype::I32, &[]) },
        ];
        let layout = build_skeleton(&path, &plans, &[], &[]).unwrap();
        let big = extent(&layout, "/big");
        assert_eq!(big.size, 1 << 30);
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.blocks() * 512 < 1 << 20, "{} blocks allocated", meta.blocks());
        let eoa = eoa(&path);
        assert_eq!(meta.len(), eoa, "libhdf5 extends the file to its EOA on close");
        assert!(layout.file_size >= eoa && layout.file_size >= big.end());
        let file = hdf5::File::open(&path).unwrap();
        assert_eq!(file.dataset("after").unwrap().read_scalar::<i32>().unwrap(), 7);
    }

    #[test]
    fn extents_are_page_aligned_disjoint_and_inside_the_file() {
        let _g = serial();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.h5");
        let mut plans = Vec::new();
        for (i, dtype) in Dtype::ALL.into_iter().enumerate() {
            let attrs = vec![("dtype".to_string(), AttrValue::Str(dtype.name().into()))];
            plans.push(DatasetPlan { attrs, ..plan(&format!("/g{}/x{i}", i % 3), dtype, &[i as u64 * 777 + 1]) });
            plans.push(plan(&format!("/scalar{i}"), dtype, &[]));
            plans.push(plan(&format!("/m{i}"), dtype, &[5, 3, i as u64]));
        }
        std::fs::write(&path, b"an older skeleton").unwrap();
        let layout = build_skeleton(&path, &plans, &[], &[]).unwrap();
        let mut live: Vec<&DatasetExtent> = layout.datasets.iter().filter(|d| d.size > 0).collect();
        assert_eq!(live.len(), plans.len() - 1); // only /m0 is empty
        live.sort_by_key(|d| d.offset);
        for d in &live {
            assert_eq!(d.offset % 4096, 0, "{d:?}");
            assert!(d.offset > 0 && layout.file_size >= d.end(), "{d:?}");
        }
        for w in live.windows(2) {
            assert!(w[0].end() <= w[1].offset, "{:?} overlaps {:?}", w[0], w[1]);
        }
        assert!(layout.file_size >= eoa(&path));
        assert_eq!(layout.file_size, std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn dimension_scales_are_attached_and_numbered_as_netcdf4_does() {
        let _g = serial();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.h5");
        let ts = DatasetPlan { scale: true, dims: vec!["/timestamp".into()], ..plan("/timestamp", Dtype::U64, &[6]) };
        let image = DatasetPlan {
            dims: vec!["/timestamp".into(), "/det/image_dim1".into()],
            ..plan("/det/image", Dtype::U16, &[6, 4])
        };
        let n = DatasetPlan { data: Some(6u64.to_le_bytes().to_vec()), ..plan("/summary/n", Dtype::U64, &[]) };
        let dims = [Dimension { path: "/det/image_dim1".into(), len: 4 }];
        let layout = build_skeleton(&path, &[ts, image, n], &dims, &[]).unwrap();
        assert_eq!(layout.datasets.len(), 3, "a dimension without a variable has no extent");
        let file = hdf5::File::open(&path).unwrap();
        let ts = file.dataset("timestamp").unwrap();
        let img = file.dataset("det/image").unwrap();
        let dim = file.dataset("det/image_dim1").unwrap();
        let names = |d: &hdf5::Dataset| d.attr_names().unwrap();
        assert!(names(&ts).contains(&"REFERENCE_LIST".to_string()), "{:?}", names(&ts));
        assert!(names(&img).contains(&"DIMENSION_LIST".to_string()), "{:?}", names(&img));
        assert_eq!(ts.attr("_Netcdf4Dimid").unwrap().read_scalar::<i32>().unwrap(), 0);
        assert_eq!(dim.attr("_Netcdf4Dimid").unwrap().read_scalar::<i32>().unwrap(), 1);
        assert_eq!(img.attr("_Netcdf4Coordinates").unwrap().read_raw::<i32>().unwrap(), vec![0, 1]);
        assert_eq!(dim.shape(), vec![4]);
        assert_eq!(dim.storage_size(), 0, "never allocated");
        assert_eq!(file.dataset("summary/n").unwrap().read_scalar::<u64>().unwrap(), 6);
        drop((ts, img, dim));
        file.close().unwrap();
        let out = h5dump(&["-A", path.to_str().unwrap()]);
        assert!(out.contains("This is a netCDF dimension but not a netCDF variable.         4"), "{out}");
        assert!(out.contains("\"/det/image_dim1\""), "{out}");
        // A dimension the plans name but nobody declares is an error naming it.
        let orphan = DatasetPlan { dims: vec!["/nowhere".into()], ..plan("/x", Dtype::U8, &[2]) };
        let err = build_skeleton(&path, &[orphan], &[], &[]).unwrap_err().to_string();
        assert!(err.contains("/x") && err.contains("/nowhere"), "{err}");
    }

    #[test]
    fn bad_plans_are_refused_before_the_file_is_touched_and_hdf5_errors_name_the_dataset() {
        let _g = serial();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.h5");
        let short = DatasetPlan { data: Some(vec![0; 7]), ..plan("/x", Dtype::F64, &[1]) };
        assert!(matches!(build_skeleton(&path, &[short], &[], &[]), Err(Error::BadValue { .. })));
        let two = DatasetPlan { fill: Some(vec![2]), ..plan("/b", Dtype::Bool, &[1]) };
        assert!(matches!(build_skeleton(&path, &[two], &[], &[]), Err(Error::BadValue { .. })));
        assert!(!path.exists());
        let twice = [plan("/x", Dtype::U8, &[1]), plan("/x", Dtype::U8, &[1])];
        let err = build_skeleton(&path, &twice, &[], &[]).unwrap_err().to_string();
        assert!(err.contains("HDF5 skeleton") && err.contains("/x"), "{err}");
    }
}

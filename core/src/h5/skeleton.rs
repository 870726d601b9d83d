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
mod tests;

//! How a view is built: the names of its HDF5 file and Zarr directory, and the row order of
//! its datasets (event-id through the global index, or arrival: shards concatenated).

/// The order of rows in the view's datasets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Event-id order through the global index (the default).
    #[default]
    EventId,
    /// Arrival order: each shard's rows as committed, shard after shard; no gather.
    Arrival,
}

impl std::str::FromStr for Order {
    type Err = String;

    fn from_str(s: &str) -> Result<Order, String> {
        match s {
            "event-id" | "id" => Ok(Order::EventId),
            "arrival" => Ok(Order::Arrival),
            _ => Err(format!("unknown order {s:?}: expected `event-id` or `arrival`")),
        }
    }
}

/// How to build a view.
#[derive(Clone, Debug)]
pub struct ViewOptions {
    /// Name of the HDF5 file (default `run.h5`).
    pub h5_name: String,
    /// Name of the Zarr v3 directory (default `run.zarr`; empty: none).
    pub zarr_name: String,
    /// Row order of every dataset.
    pub order: Order,
}

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions { h5_name: "run.h5".into(), zarr_name: "run.zarr".into(), order: Order::EventId }
    }
}

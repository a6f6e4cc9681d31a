pub mod monitor;
pub mod simulated_runtime;
pub mod synthetic_nettrace;
pub mod target;

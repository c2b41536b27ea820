//! The system boundary (being written).

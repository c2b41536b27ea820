//! Service tests of the firmware service.

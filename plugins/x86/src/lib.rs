//! x86 page-table walkers.

//! Raw and padded image writer.

//! kdump-compressed writer.

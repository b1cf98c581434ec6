//! Synthetic streams: each built here byte by byte from the format's description in
//! docs/formats.md, not by this reader's code.

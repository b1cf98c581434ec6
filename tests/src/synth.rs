//! Synthetic guests: page tables laid out in code from a list of intended mappings.

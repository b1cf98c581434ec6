//! The dumpconv library: the conversion pipeline and the registry of built-in plugins.

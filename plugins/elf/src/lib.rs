//! ELF core writer.

//! An independent reference translator for x86 paging, straight from the Intel SDM.

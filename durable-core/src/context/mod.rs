//! The contexts workflow and activity code receive.

pub mod activity;
pub mod saga;
pub mod workflow;

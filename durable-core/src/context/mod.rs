//! The contexts workflow and activity code receive.

pub mod activity;
pub mod child;
pub mod saga;
pub mod workflow;

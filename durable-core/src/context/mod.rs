//! The contexts workflow and activity code receive.

pub mod activity;
pub mod continue_as_new;
pub mod saga;
pub mod workflow;

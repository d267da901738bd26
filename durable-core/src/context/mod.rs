//! The contexts workflow and activity code receive.

pub mod activity;
pub mod child;
pub mod continue_as_new;
pub mod saga;
pub mod workflow;

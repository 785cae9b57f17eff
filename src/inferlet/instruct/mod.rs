//! `pie:instruct`: chat templating, reasoning and tool-use decoders (one file per interface).

pub mod chat;
pub mod reasoning;
pub mod tool_use;

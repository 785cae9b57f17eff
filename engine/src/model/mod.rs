//! Model definitions: which tensors a family has and how they are named and shaped.

pub mod llama;

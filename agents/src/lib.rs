//! Model-based agents. Not implemented yet: this crate is reserved for issue 5
//! (replay, world models, soft double-Q, MLE / FuncID / OMD / VEP agents).

/*!
Consumers: the tasks that read the journal, each from its own committed offset.

A consumer reads entries in offset order, delivers them somewhere, and only then commits the
offset past them, so a crash at any point makes it re-read (never skip) what it had not finished.
Where the destination can hold the offset itself (the store), the offset is committed together
with the data, which makes delivery exactly-once; where it cannot (the lake), the data's names
carry the offsets instead.
*/

pub mod lake_writer;
pub mod store_loader;

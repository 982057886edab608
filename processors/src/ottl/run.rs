//! Runs OTTL over a batch, one context at a time, on the encoded bytes: each item is
//! read where it lies, dropped items are cut out, and only edited items are rewritten.

use std::borrow::Cow;

use sidekick_collector::payload::wire::Edit;
use sidekick_collector::payload::{Batch, Signal};

use super::item::{Context, DataKind, Item};
use super::wire::{self, Reader};

/// What becomes of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Drop,
}

/// Where a context's messages are in the batch: the schema depth the walk visits.
fn depth(context: Context) -> usize {
    match context {
        Context::Resource => 0,
        Context::Scope => 1,
        Context::Span | Context::SpanEvent | Context::Log | Context::Metric => 2,
        Context::DataPoint => 4,
    }
}

fn field1(msg: &[u8]) -> &[u8] {
    wire::last(msg, 1).map(|f| f.bytes()).unwrap_or(&[])
}

/// Field 1 of an ancestor (a `ResourceSpans`' resource, a `ScopeSpans`' scope), found
/// once per ancestor rather than once per item: finding it reads past every item the
/// ancestor holds. Remembered as a range of the ancestor last seen, since the walk
/// hands out its slices afresh on each visit.
#[derive(Default)]
struct Field1 {
    of: (usize, usize),
    at: std::ops::Range<usize>,
}

impl Field1 {
    fn get<'b>(&mut self, ancestor: Option<&(u32, &'b [u8])>) -> &'b [u8] {
        let Some(&(_, msg)) = ancestor else {
            return &[];
        };
        let key = (msg.as_ptr() as usize, msg.len());
        if self.of != key {
            let found = field1(msg);
            let start = (found.as_ptr() as usize).saturating_sub(msg.as_ptr() as usize);
            self.of = key;
            self.at = if found.is_empty() {
                0..0
            } else {
                start..start + found.len()
            };
        }
        &msg[self.at.clone()]
    }
}

/// A data message's kind, read once per data message: reading it passes every point.
#[derive(Default)]
struct DataKinds {
    of: (usize, usize),
    value: DataKind,
}

impl DataKinds {
    fn get(&mut self, msg: &[u8]) -> DataKind {
        let key = (msg.as_ptr() as usize, msg.len());
        if self.of != key {
            self.of = key;
            self.value = DataKind::of(msg);
        }
        self.value
    }
}

/// Runs `f` on every item of `context` in the batch, in order. `f` may edit the item
/// (its `msg`) and says whether to keep it. Span events dropped leave their span;
/// scopes, resources and metrics left empty are removed.
pub fn for_each<S: Signal>(
    batch: &mut Batch<S>,
    context: Context,
    f: &mut dyn FnMut(&mut Item<'_>) -> Verdict,
) {
    let (mut resource_of, mut scope_of) = (Field1::default(), Field1::default());
    let mut data_kind = DataKinds::default();
    batch.edit_encoded(depth(context), &mut |ancestors, _number, msg| {
        let resource = resource_of.get(ancestors.first());
        let scope = scope_of.get(ancestors.get(1));
        match context {
            // The resource and scope are field 1 of the messages visited.
            Context::Resource | Context::Scope => {
                let mut item = Item::new(context, field1(msg));
                if context == Context::Scope {
                    item.resource = resource;
                }
                match f(&mut item) {
                    Verdict::Drop => Edit::Drop,
                    Verdict::Keep => match item.msg {
                        Cow::Borrowed(_) => Edit::Keep,
                        Cow::Owned(new) => {
                            let mut field = Vec::with_capacity(new.len() + 6);
                            wire::put_bytes(&mut field, 1, &new);
                            Edit::Replace(wire::replace_field_first(msg, 1, &field))
                        }
                    },
                }
            }
            Context::SpanEvent => events(msg, resource, scope, f),
            _ => {
                let mut item = Item::new(context, msg);
                item.resource = resource;
                item.scope = scope;
                if let Some(&(data, data_msg)) = ancestors.get(3) {
                    item.parent = ancestors[2].1;
                    item.data = data;
                    item.data_kind = data_kind.get(data_msg);
                }
                match f(&mut item) {
                    Verdict::Drop => Edit::Drop,
                    Verdict::Keep => match item.msg {
                        Cow::Borrowed(_) => Edit::Keep,
                        Cow::Owned(new) => Edit::Replace(new),
                    },
                }
            }
        }
    });
}

/// The events (field 11) of one span.
fn events(
    span: &[u8],
    resource: &[u8],
    scope: &[u8],
    f: &mut dyn FnMut(&mut Item<'_>) -> Verdict,
) -> Edit {
    let mut changed = false;
    let mut kept: Vec<Cow<'_, [u8]>> = Vec::new();
    for field in Reader::new(span).filter(|f| f.number == 11) {
        let mut item = Item::new(Context::SpanEvent, field.bytes());
        item.resource = resource;
        item.scope = scope;
        item.parent = span;
        match f(&mut item) {
            Verdict::Drop => changed = true,
            Verdict::Keep => {
                changed |= matches!(item.msg, Cow::Owned(_));
                kept.push(item.msg);
            }
        }
    }
    if !changed {
        return Edit::Keep;
    }
    let mut out = Vec::with_capacity(span.len());
    for field in Reader::new(span).filter(|f| f.number != 11) {
        out.extend_from_slice(field.raw);
    }
    for event in &kept {
        wire::put_bytes(&mut out, 11, event);
    }
    Edit::Replace(out)
}

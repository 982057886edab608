//! Evaluation of compiled conditions and values against one item.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::compile::{CExpr, Cond};
use super::item::{index, Item};
use super::parse::{CmpOp, MathOp};
use super::value::Value;

/// Why evaluation failed on one item (the processors apply `error_mode`).
pub type EvalError = String;

/// A literal, borrowed rather than copied.
fn borrow<'s>(v: &'s Value<'static>) -> Value<'s> {
    match v {
        Value::Str(s) => Value::Str(Cow::Borrowed(s.as_ref())),
        Value::Bytes(b) => Value::Bytes(Cow::Borrowed(b.as_ref())),
        other => other.clone(),
    }
}

pub fn value<'s>(e: &'s CExpr, item: &'s Item<'_>) -> Result<Value<'s>, EvalError> {
    Ok(match e {
        CExpr::Lit(v) => borrow(v),
        CExpr::Read(access) => item.read(access),
        CExpr::Call(conv, keys) => index(conv.eval(item)?, keys),
        CExpr::List(items) => Value::List(
            items
                .iter()
                .map(|i| value(i, item))
                .collect::<Result<_, _>>()?,
        ),
        CExpr::Map(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| Ok((Cow::Borrowed(k.as_str()), value(v, item)?)))
                .collect::<Result<_, EvalError>>()?,
        ),
        CExpr::Math(a, op, b) => math(value(a, item)?, *op, value(b, item)?)?,
        CExpr::Cond(c) => Value::Bool(test(c, item)?),
    })
}

pub fn test(c: &Cond, item: &Item<'_>) -> Result<bool, EvalError> {
    Ok(match c {
        Cond::Or(terms) => {
            for t in terms {
                if test(t, item)? {
                    return Ok(true);
                }
            }
            false
        }
        Cond::And(terms) => {
            for t in terms {
                if !test(t, item)? {
                    return Ok(false);
                }
            }
            true
        }
        Cond::Not(inner) => !test(inner, item)?,
        Cond::Compare(a, op, b) => compare(&value(a, item)?, *op, &value(b, item)?),
        Cond::Value(e) => match value(e, item)? {
            Value::Bool(b) => b,
            other => {
                return Err(format!(
                    "a condition must be true or false, got {}",
                    other.type_name()
                ))
            }
        },
    })
}

/// OTTL comparison: unlike types are unequal, and never ordered.
pub fn compare(a: &Value<'_>, op: CmpOp, b: &Value<'_>) -> bool {
    let ord = a.compare(b);
    match op {
        CmpOp::Eq => ord == Some(Ordering::Equal),
        CmpOp::Ne => ord != Some(Ordering::Equal),
        CmpOp::Lt => ord == Some(Ordering::Less),
        CmpOp::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Gt => ord == Some(Ordering::Greater),
        CmpOp::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
    }
}

fn math<'s>(a: Value<'s>, op: MathOp, b: Value<'s>) -> Result<Value<'s>, EvalError> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(Value::Int(match op {
            MathOp::Add => x.wrapping_add(y),
            MathOp::Sub => x.wrapping_sub(y),
            MathOp::Mul => x.wrapping_mul(y),
            MathOp::Div if y == 0 => return Err("division by zero".into()),
            MathOp::Div => x.wrapping_div(y),
        })),
        (Value::Double(x), Value::Double(y)) => Ok(Value::Double(match op {
            MathOp::Add => x + y,
            MathOp::Sub => x - y,
            MathOp::Mul => x * y,
            MathOp::Div if y == 0.0 => return Err("division by zero".into()),
            MathOp::Div => x / y,
        })),
        (a, b) => Err(format!(
            "math needs two ints or two doubles, got {} and {}",
            a.type_name(),
            b.type_name()
        )),
    }
}

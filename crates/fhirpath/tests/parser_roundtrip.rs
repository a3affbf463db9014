//! Property test: printing any syntax tree and parsing the text gives the same tree back.

use fhirpath::Span;
use fhirpath::ast::{BinaryOp, Expr, ExprKind, Literal, TypeOp, TypeSpecifier, UnaryOp};
use fhirpath::parser::parse;
use proptest::prelude::*;

fn node(kind: ExprKind) -> Expr {
    Expr {
        kind,
        span: Span::default(),
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z_][a-zA-Z0-9_]{0,8}",
        // keywords and odd names must survive as (delimited) identifiers
        1 => prop::sample::select(vec!["and", "or", "div", "true", "is", "as", "contains", "day", "weeks"]).prop_map(String::from),
        1 => "[a-z][a-z ]{0,6}[a-z]",
    ]
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        Just(Literal::Empty),
        any::<bool>().prop_map(Literal::Boolean),
        "[ -~\\n\\té漢]{0,10}".prop_map(Literal::String),
        "[0-9]{1,6}".prop_map(Literal::Integer),
        "[0-9]{1,4}\\.[0-9]{1,4}".prop_map(Literal::Decimal),
        prop::sample::select(vec!["2014", "2014-05", "2014-05-06"])
            .prop_map(|s| Literal::Date(s.into())),
        prop::sample::select(vec![
            "2014T",
            "2014-05-06T10",
            "2014-05-06T10:30:00.123+02:00",
            "2014-05-06T10:30Z"
        ])
        .prop_map(|s| Literal::DateTime(s.into())),
        prop::sample::select(vec!["10", "10:30", "10:30:15.5"])
            .prop_map(|s| Literal::Time(s.into())),
        (
            "[0-9]{1,3}(\\.[0-9]{1,2})?",
            prop::sample::select(vec!["mg", "day", "weeks", "mm[Hg]", "it's"])
        )
            .prop_map(|(n, u)| Literal::Quantity(n, u.into())),
    ]
}

fn type_specifier() -> impl Strategy<Value = TypeSpecifier> {
    (
        prop::option::of(prop::sample::select(vec!["FHIR", "System"])),
        name(),
    )
        .prop_map(|(ns, name)| TypeSpecifier {
            namespace: ns.map(String::from),
            name,
        })
}

const BINARY: [BinaryOp; 22] = [
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::IntDiv,
    BinaryOp::Mod,
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Concat,
    BinaryOp::Union,
    BinaryOp::Lt,
    BinaryOp::Le,
    BinaryOp::Gt,
    BinaryOp::Ge,
    BinaryOp::Eq,
    BinaryOp::Ne,
    BinaryOp::Equiv,
    BinaryOp::NotEquiv,
    BinaryOp::In,
    BinaryOp::Contains,
    BinaryOp::And,
    BinaryOp::Or,
    BinaryOp::Xor,
    BinaryOp::Implies,
];

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        literal().prop_map(|l| node(ExprKind::Literal(l))),
        name().prop_map(|n| node(ExprKind::Identifier(n))),
        Just(node(ExprKind::This)),
        Just(node(ExprKind::IndexVar)),
        Just(node(ExprKind::Total)),
        name().prop_map(|n| node(ExprKind::Variable(n))),
    ];
    leaf.prop_recursive(5, 48, 3, |inner| {
        prop_oneof![
            (inner.clone(), name()).prop_map(|(t, n)| node(ExprKind::Member(Box::new(t), n))),
            (
                prop::option::of(inner.clone()),
                name(),
                prop::collection::vec(inner.clone(), 0..3)
            )
                .prop_map(|(t, n, args)| {
                    node(ExprKind::Function {
                        target: t.map(Box::new),
                        name: n,
                        args,
                    })
                }),
            (inner.clone(), inner.clone())
                .prop_map(|(t, i)| node(ExprKind::Index(Box::new(t), Box::new(i)))),
            (prop::bool::ANY, inner.clone()).prop_map(|(minus, e)| {
                node(ExprKind::Unary(
                    if minus { UnaryOp::Minus } else { UnaryOp::Plus },
                    Box::new(e),
                ))
            }),
            (
                prop::sample::select(BINARY.to_vec()),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(op, a, b)| node(ExprKind::Binary(
                    op,
                    Box::new(a),
                    Box::new(b)
                ))),
            (prop::bool::ANY, inner, type_specifier()).prop_map(|(is, e, t)| {
                node(ExprKind::Type(
                    if is { TypeOp::Is } else { TypeOp::As },
                    Box::new(e),
                    t,
                ))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn printed_trees_parse_back_to_themselves(tree in expr()) {
        let text = tree.to_string();
        let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n  {text}")))?;
        prop_assert_eq!(&parsed, &tree, "printed as {}", text);
        // Printing is stable, too.
        prop_assert_eq!(parsed.to_string(), text);
    }
}

#[test]
fn regression_sign_before_invocation_keeps_its_meaning() {
    for source in [
        "-1.convertsToInteger()",
        "(-1).convertsToInteger()",
        "-(-x)",
        "a is T is U",
        "(a | b).c",
        "4 'mg'.value",
    ] {
        let tree = parse(source).unwrap();
        assert_eq!(
            parse(&tree.to_string()).unwrap(),
            tree,
            "{source} -> {tree}"
        );
    }
}

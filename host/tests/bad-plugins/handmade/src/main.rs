//! Writes the bad plugins that Rust cannot build, as components assembled by hand with
//! `wasm-encoder`: they export the contract's `init` and `run` and misbehave in `run`.
//!
//! ```text
//! handmade OUT_DIR
//! ```
//!
//! - `bad_two_memories.wasm`: two core instances, each with its own linear memory; `run`
//!   grows each to 41 MiB (under a 64 MiB cap apiece, over it together) and returns no
//!   resources.
//! - `bad_aliased_output.wasm`: `run` returns 64 resources whose bodies are all the same
//!   1 MiB of its memory: a 2 MiB instance whose output is 64 MiB once copied out.

use std::path::Path;

use wasm_encoder::{
    CanonicalOption, CodeSection, ComponentBuilder, ComponentExportKind, ComponentValType,
    ConstExpr, DataSection, EntityType, ExportKind, ExportSection, Function, FunctionSection,
    GlobalSection, GlobalType, ImportSection, MemArg, MemorySection, MemoryType, Module, ModuleArg,
    PrimitiveValType, TypeSection, ValType,
};

/// A wasm page.
const PAGE: u32 = 64 << 10;
/// Where `init` and `run` write their results.
const RET: u32 = 16;
/// Where the output's records start.
const RECORDS: u32 = 4096;
/// The output's type URL and name.
const TYPE_URL: (u32, &str) = (1024, "type.googleapis.com/envoy.config.cluster.v3.Cluster");
const NAME: (u32, &str) = (1200, "aliased");
/// The one body every aliased record points at: 1 MiB from 64 KiB on.
const BODY: (u32, u32) = (PAGE, 1 << 20);
/// Where `cabi_realloc` starts handing out memory: past the body.
const HEAP: u32 = PAGE + (1 << 20);
/// How many records the aliased output has.
const ALIASED_RECORDS: u32 = 64;
/// How many pages `run` grows each memory of the two-memory component by: 40 MiB.
const GROW_PAGES: u32 = 640;

/// What `run` does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Misbehaviour {
    /// Grows its own memory and the second instance's, then returns no resources.
    TwoMemories,
    /// Returns [`ALIASED_RECORDS`] resources that share one body.
    AliasedOutput,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).ok_or("usage: handmade OUT_DIR")?;
    let out = Path::new(&out);
    std::fs::create_dir_all(out)?;
    for (name, misbehaviour) in [
        ("bad_two_memories.wasm", Misbehaviour::TwoMemories),
        ("bad_aliased_output.wasm", Misbehaviour::AliasedOutput),
    ] {
        let path = out.join(name);
        let tmp = path.with_extension("wasm.tmp");
        std::fs::write(&tmp, component(misbehaviour))?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

/// The component: the main core module (with the second one's instance as its import when
/// there are two memories), lifted with the contract's types.
fn component(misbehaviour: Misbehaviour) -> Vec<u8> {
    let mut b = ComponentBuilder::default();
    let two = misbehaviour == Misbehaviour::TwoMemories;
    let main = b.core_module(Some("main"), &main_module(misbehaviour));
    let instance = if two {
        let second = b.core_module(Some("second"), &second_module());
        let second = b.core_instantiate(Some("second"), second, []);
        b.core_instantiate(
            Some("main"),
            main,
            [("second", ModuleArg::Instance(second))],
        )
    } else {
        b.core_instantiate(Some("main"), main, [])
    };
    let memory = b.core_alias_export(Some("memory"), instance, "memory", ExportKind::Memory);
    let realloc = b.core_alias_export(None, instance, "cabi_realloc", ExportKind::Func);
    let init = b.core_alias_export(None, instance, "init", ExportKind::Func);
    let run = b.core_alias_export(None, instance, "run", ExportKind::Func);

    let string = ComponentValType::Primitive(PrimitiveValType::String);
    // Records in an export's signature must be exported types themselves.
    let (locality, ty) = b.type_defined(None);
    ty.record([("region", string), ("zone", string), ("sub-zone", string)]);
    let locality = b.export("locality", ComponentExportKind::Type, locality, None);
    let (optional_locality, ty) = b.type_defined(None);
    ty.option(ComponentValType::Type(locality));
    let (features, ty) = b.type_defined(None);
    ty.list(string);
    let (node, ty) = b.type_defined(None);
    ty.record([
        ("id", string),
        ("cluster", string),
        ("locality", ComponentValType::Type(optional_locality)),
        ("metadata-json", string),
        ("user-agent-name", string),
        ("user-agent-version", string),
        ("client-features", ComponentValType::Type(features)),
    ]);
    let node = b.export("node", ComponentExportKind::Type, node, None);
    let (bytes, ty) = b.type_defined(None);
    ty.list(ComponentValType::Primitive(PrimitiveValType::U8));
    let (resource, ty) = b.type_defined(None);
    ty.record([
        ("type-url", string),
        ("name", string),
        ("body", ComponentValType::Type(bytes)),
    ]);
    let resource = b.export("resource", ComponentExportKind::Type, resource, None);
    let (resources, ty) = b.type_defined(None);
    ty.list(ComponentValType::Type(resource));
    let (init_result, ty) = b.type_defined(None);
    ty.result(None, Some(string));
    let (run_result, ty) = b.type_defined(None);
    ty.result(Some(ComponentValType::Type(resources)), Some(string));
    let (init_type, mut ty) = b.type_function(None);
    ty.params([("config", string)])
        .result(Some(ComponentValType::Type(init_result)));
    let (run_type, mut ty) = b.type_function(None);
    ty.params([
        ("node", ComponentValType::Type(node)),
        ("resources", ComponentValType::Type(resources)),
    ])
    .result(Some(ComponentValType::Type(run_result)));

    let options = || {
        [
            CanonicalOption::Memory(memory),
            CanonicalOption::Realloc(realloc),
            CanonicalOption::UTF8,
        ]
    };
    let init = b.lift_func(Some("init"), init, init_type, options());
    let run = b.lift_func(Some("run"), run, run_type, options());
    b.export("init", ComponentExportKind::Func, init, None);
    b.export("run", ComponentExportKind::Func, run, None);
    b.finish()
}

/// The module that owns the component's main memory (exported as `memory`), its allocator,
/// and `init`/`run` in the canonical ABI.
fn main_module(misbehaviour: Misbehaviour) -> Module {
    let two = misbehaviour == Misbehaviour::TwoMemories;
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32; 4], [ValType::I32]); // 0: cabi_realloc
    types.ty().function([ValType::I32; 2], [ValType::I32]); // 1: init(ptr, len) -> ret
    types.ty().function([ValType::I32], [ValType::I32]); // 2: run(args) -> ret; grow
    let mut imports = ImportSection::new();
    if two {
        imports.import("second", "grow", EntityType::Function(2));
    }
    let first = u32::from(two); // the index of the first defined function
    let mut functions = FunctionSection::new();
    functions.function(0).function(1).function(2);
    let mut memories = MemorySection::new();
    memories.memory(memory_type(HEAP.div_ceil(PAGE)));
    let mut globals = GlobalSection::new();
    let heap = i32::try_from(HEAP).unwrap_or(i32::MAX);
    globals.global(
        GlobalType {
            val_type: ValType::I32,
            mutable: true,
            shared: false,
        },
        &ConstExpr::i32_const(heap),
    );
    let mut exports = ExportSection::new();
    exports
        .export("memory", ExportKind::Memory, 0)
        .export("cabi_realloc", ExportKind::Func, first)
        .export("init", ExportKind::Func, first + 1)
        .export("run", ExportKind::Func, first + 2);
    let mut code = CodeSection::new();
    code.function(&realloc())
        .function(&init())
        .function(&run(misbehaviour));
    let mut data = DataSection::new();
    data.active(0, &offset(TYPE_URL.0), TYPE_URL.1.bytes())
        .active(0, &offset(NAME.0), NAME.1.bytes());
    if misbehaviour == Misbehaviour::AliasedOutput {
        let record = [
            TYPE_URL.0,
            len(TYPE_URL.1),
            NAME.0,
            len(NAME.1),
            BODY.0,
            BODY.1,
        ];
        let records: Vec<u8> = (0..ALIASED_RECORDS)
            .flat_map(|_| record)
            .flat_map(u32::to_le_bytes)
            .collect();
        data.active(0, &offset(RECORDS), records);
    }
    let mut module = Module::new();
    module
        .section(&types)
        .section(&imports)
        .section(&functions)
        .section(&memories)
        .section(&globals)
        .section(&exports)
        .section(&code)
        .section(&data);
    module
}

/// The second instance of the two-memory component: a memory of its own and a way to grow it.
fn second_module() -> Module {
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    let mut functions = FunctionSection::new();
    functions.function(0);
    let mut memories = MemorySection::new();
    memories.memory(memory_type(1));
    let mut exports = ExportSection::new();
    exports.export("grow", ExportKind::Func, 0);
    let mut grow = Function::new([]);
    grow.instructions().local_get(0).memory_grow(0).end();
    let mut code = CodeSection::new();
    code.function(&grow);
    let mut module = Module::new();
    module
        .section(&types)
        .section(&functions)
        .section(&memories)
        .section(&exports)
        .section(&code);
    module
}

/// `cabi_realloc(old, old_size, align, size)`: a bump allocator that grows memory as needed
/// (the host only ever asks for new blocks).
fn realloc() -> Function {
    const ALIGN: u32 = 2;
    const SIZE: u32 = 3;
    const PTR: u32 = 4;
    let mut f = Function::new([(1, ValType::I32)]);
    f.instructions()
        // ptr = (heap + align - 1) & -align
        .global_get(0)
        .local_get(ALIGN)
        .i32_add()
        .i32_const(1)
        .i32_sub()
        .i32_const(0)
        .local_get(ALIGN)
        .i32_sub()
        .i32_and()
        .local_tee(PTR)
        // heap = ptr + size
        .local_get(SIZE)
        .i32_add()
        .global_set(0)
        // if heap > memory size: grow by the missing pages
        .global_get(0)
        .memory_size(0)
        .i32_const(16)
        .i32_shl()
        .i32_gt_u()
        .if_(wasm_encoder::BlockType::Empty)
        .global_get(0)
        .memory_size(0)
        .i32_const(16)
        .i32_shl()
        .i32_sub()
        .i32_const(0xffff)
        .i32_add()
        .i32_const(16)
        .i32_shr_u()
        .memory_grow(0)
        .drop()
        .end()
        .local_get(PTR)
        .end();
    f
}

/// `init(config)`: `ok`.
fn init() -> Function {
    let mut f = Function::new([]);
    f.instructions()
        .i32_const(ret())
        .i32_const(0)
        .i32_store8(mem_arg(0, 0))
        .i32_const(ret())
        .end();
    f
}

/// `run(node, resources)`: misbehaves, then returns `ok` with its list of resources.
fn run(misbehaviour: Misbehaviour) -> Function {
    let mut f = Function::new([]);
    let mut body = f.instructions();
    let (records, count) = match misbehaviour {
        Misbehaviour::TwoMemories => {
            let pages = i32::try_from(GROW_PAGES).unwrap_or(0);
            // The second instance's memory is grown through its import (function 0).
            body.i32_const(pages)
                .memory_grow(0)
                .drop()
                .i32_const(pages)
                .call(0)
                .drop();
            (RECORDS, 0)
        }
        Misbehaviour::AliasedOutput => (RECORDS, ALIASED_RECORDS),
    };
    body.i32_const(ret())
        .i32_const(0)
        .i32_store8(mem_arg(0, 0))
        .i32_const(ret())
        .i32_const(i32::try_from(records).unwrap_or(0))
        .i32_store(mem_arg(4, 2))
        .i32_const(ret())
        .i32_const(i32::try_from(count).unwrap_or(0))
        .i32_store(mem_arg(8, 2))
        .i32_const(ret())
        .end();
    f
}

fn memory_type(pages: u32) -> MemoryType {
    MemoryType {
        minimum: u64::from(pages),
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    }
}

fn mem_arg(offset: u64, align: u32) -> MemArg {
    MemArg {
        offset,
        align,
        memory_index: 0,
    }
}

fn offset(at: u32) -> ConstExpr {
    ConstExpr::i32_const(i32::try_from(at).unwrap_or(0))
}

fn ret() -> i32 {
    i32::try_from(RET).unwrap_or(0)
}

fn len(s: &str) -> u32 {
    u32::try_from(s.len()).unwrap_or(0)
}

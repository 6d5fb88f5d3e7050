// Applies {"/json/pointer": value, ...} replacements to a parsed tokenizer.json:
// how the golden scripts make a tokenizer's variants.
export function applyPatch(root, patch) {
  for (const [pointer, value] of Object.entries(patch)) {
    const keys = pointer.split("/").slice(1);
    let node = root;
    for (const key of keys.slice(0, -1)) node = node[key];
    node[keys[keys.length - 1]] = value;
  }
  return root;
}

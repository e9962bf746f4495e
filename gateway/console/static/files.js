// The workspace's files: list (GET file-search), upload (a file input, or files dropped on the
// panel: POST upload/, multipart "files"), download (fetched with the key, saved from a blob)
// and delete. File names are shown as text.

import { del, get, quotePath, request } from "./api.js";
import { clear, el, formatBytes, showError } from "./dom.js";

const LIMIT = 100; // the agent's largest page

export class FileBrowser {
  constructor(panel, base) {
    this.base = base;
    this.list = el("ul", { class: "files", dataset: { testid: "file-list" } });
    const input = el("input", { type: "file", multiple: true, dataset: { testid: "upload" },
      onchange: () => { this.upload(input.files).finally(() => { input.value = ""; }); } });
    this.drop = el("div", { class: "drop", dataset: { testid: "drop-zone" } },
      "Drop files here, or ", el("label", {}, input));
    for (const name of ["dragenter", "dragover"]) {
      panel.addEventListener(name, (event) => { event.preventDefault(); this.drop.classList.add("over"); });
    }
    panel.addEventListener("dragleave", () => this.drop.classList.remove("over"));
    panel.addEventListener("drop", (event) => {
      event.preventDefault();
      this.drop.classList.remove("over");
      if (event.dataTransfer?.files?.length) this.upload(event.dataTransfer.files);
    });
    panel.append(el("h3", {}, "Files ", el("button", { class: "small", onclick: () => this.refresh() }, "Refresh")),
      this.drop, this.list);
  }

  async refresh() {
    let answer;
    try {
      answer = await get(`${this.base}/file-search?limit=${LIMIT}`);
    } catch (error) {
      showError(`Files: ${error.message}`);
      return;
    }
    clear(this.list);
    for (const file of answer.results) this.list.append(this.row(file));
    if (answer.next_page_id) this.list.append(el("li", { class: "more" }, `only the first ${LIMIT} are shown`));
  }

  row(file) {
    const actions = file.is_dir ? [] : [
      el("button", { class: "small", dataset: { testid: "download" }, onclick: () => this.download(file) }, "Download"),
      el("button", { class: "small danger", dataset: { testid: "delete-file" }, onclick: () => this.remove(file) }, "Delete"),
    ];
    return el("li", { dataset: { testid: "file", path: file.path } },
      el("span", { class: "name" }, file.is_dir ? `${file.path}/` : file.path), " ",
      el("span", { class: "size" }, file.is_dir ? "" : formatBytes(file.size)), " ", ...actions);
  }

  async upload(files) {
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    try {
      await request("POST", `${this.base}/upload/`, { body: form });
    } catch (error) {
      showError(`Upload failed: ${error.message}`);
    }
    await this.refresh();
  }

  async download(file) {
    try {
      const response = await request("GET", `${this.base}/file-content/${quotePath(file.path)}`, { raw: true });
      const url = URL.createObjectURL(await response.blob());
      const link = el("a", { href: url, download: file.name });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (error) {
      showError(`Download failed: ${error.message}`);
    }
  }

  async remove(file) {
    try {
      await del(`${this.base}/file/${quotePath(file.path)}`);
    } catch (error) {
      showError(`Delete failed: ${error.message}`);
    }
    await this.refresh();
  }
}

package executor

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"codeexec/internal/python"
)

// TestLibrariesInSandbox imports every library of python.Libraries inside
// a sandbox and runs its typical call: all are installed and readable
// there, not only on the host.
func TestLibrariesInSandbox(t *testing.T) {
	e := newTestExecutor(t, Config{})
	var code strings.Builder
	code.WriteString("import importlib, importlib.metadata, matplotlib.pyplot\n")
	for _, l := range python.Libraries {
		top, _, _ := strings.Cut(l.Import, ".")
		fmt.Fprintf(&code, "import %s\nimport %s\n%s\nprint(%q, importlib.metadata.version(%q))\n", l.Import, top, l.Probe, l.Name, l.Name)
	}
	res := execOK(t, e, Request{Code: code.String()})
	for _, l := range python.Libraries {
		if !strings.Contains(res.Stdout, l.Name+" ") {
			t.Errorf("no version of %s in %q", l.Name, res.Stdout)
		}
	}
}

func execOK(t *testing.T, e interface {
	Execute(context.Context, Request) (*Result, error)
}, req Request) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := e.Execute(ctx, req)
	if err != nil {
		t.Fatalf("Execute: %v", err)
	}
	if res.Status != StatusOK {
		t.Fatalf("status %s: %+v\nstdout %s\nstderr %s", res.Status, res.Error, res.Stdout, res.Stderr)
	}
	return res
}

func testdataFile(t *testing.T, name string) InputFile {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return DataFile(name, data)
}

func wantFile(t *testing.T, res *Result, path, mimePrefix string) {
	t.Helper()
	for _, f := range res.Files {
		if f.Path == path {
			if f.Bytes == 0 || !strings.HasPrefix(f.MIMEType, mimePrefix) {
				t.Errorf("file %s: %+v, want non-empty %s", path, f, mimePrefix)
			}
			return
		}
	}
	t.Errorf("no file %s in %+v", path, res.Files)
}

// TestExcelAndDocuments works with office files as users do: an uploaded
// workbook read with pandas, a summary with a chart written to a new one,
// a .docx and a .pdf read and written. A session carries the files from
// one execution to the next.
func TestExcelAndDocuments(t *testing.T) {
	e := newTestExecutor(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := e.NewSession(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	t.Run("xlsx", func(t *testing.T) {
		res := execOK(t, s, Request{Files: []InputFile{testdataFile(t, "sales.xlsx")}, Code: `import pandas as pd
df = pd.read_excel("sales.xlsx", sheet_name="Sales")
totals = df.groupby("region")["units"].sum()
print(totals.to_dict())
with pd.ExcelWriter("summary.xlsx", engine="xlsxwriter") as w:
    totals.to_frame().to_excel(w, sheet_name="Totals")
    chart = w.book.add_chart({"type": "column"})
    chart.add_series({"categories": ["Totals", 1, 0, len(totals), 0], "values": ["Totals", 1, 1, len(totals), 1]})
    w.sheets["Totals"].insert_chart("D2", chart)
import openpyxl, zipfile
print(sorted(n for n in zipfile.ZipFile("summary.xlsx").namelist() if n.startswith("xl/charts/")))
print(pd.read_excel("summary.xlsx", index_col=0)["units"].sum())`})
		want := "{'east': 130, 'north': 255, 'south': 175}\n['xl/charts/chart1.xml']\n560\n"
		if res.Stdout != want {
			t.Errorf("stdout %q, want %q", res.Stdout, want)
		}
		wantFile(t, res, "summary.xlsx", "application/")
	})
	t.Run("docx", func(t *testing.T) {
		res := execOK(t, s, Request{Files: []InputFile{testdataFile(t, "memo.docx")}, Code: `import docx
d = docx.Document("memo.docx")
print([p.text for p in d.paragraphs])
out = docx.Document()
out.add_heading("Reply", 1)
out.add_paragraph("Noted: " + d.paragraphs[1].text)
t = out.add_table(rows=1, cols=2)
t.rows[0].cells[0].text = "north"
t.rows[0].cells[1].text = "255"
out.save("reply.docx")
r = docx.Document("reply.docx")
print(r.paragraphs[1].text, r.tables[0].rows[0].cells[1].text)`})
		want := "['Quarterly memo', 'Units rose in every region.']\nNoted: Units rose in every region. 255\n"
		if res.Stdout != want {
			t.Errorf("stdout %q, want %q", res.Stdout, want)
		}
		wantFile(t, res, "reply.docx", "application/")
	})
	t.Run("pdf", func(t *testing.T) {
		res := execOK(t, s, Request{Files: []InputFile{testdataFile(t, "invoice.pdf")}, Code: `import pypdf
from reportlab.pdfgen import canvas
r = pypdf.PdfReader("invoice.pdf")
print(len(r.pages), "Total: 42.00 EUR" in r.pages[0].extract_text())
c = canvas.Canvas("report.pdf")
c.drawString(72, 720, "Report for " + r.pages[0].extract_text().splitlines()[0])
c.save()
w = pypdf.PdfWriter()
w.append("report.pdf")
w.add_page(r.pages[1])
w.write("merged.pdf")
m = pypdf.PdfReader("merged.pdf")
print(len(m.pages), m.pages[0].extract_text().strip(), "|", m.pages[1].extract_text().strip())`})
		want := "2 True\n2 Report for Invoice 4711 | Page two\n"
		if res.Stdout != want {
			t.Errorf("stdout %q, want %q", res.Stdout, want)
		}
		wantFile(t, res, "report.pdf", "application/pdf")
		wantFile(t, res, "merged.pdf", "application/pdf")
	})
}

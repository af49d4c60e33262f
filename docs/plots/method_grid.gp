# The automatic choice against the best fixed method on each of the 48 regimes of the grid
# (docs/benchmarks.md, "The automatic choice"): its cost per token over the best fixed method's,
# and over standard decoding's, on the cost clock, from the CSV of cospec-method-grid.
#
# Run from the repository root (gnuplot 5.4 with the pngcairo terminal, e.g. gnuplot-nox):
#   ./build/release/examples/cospec-method-grid --csv docs/plots/method_grid.csv
#   gnuplot docs/plots/method_grid.gp

if (!exists("csv")) csv = 'docs/plots/method_grid.csv'
if (!exists("png")) png = 'docs/plots/method_grid.png'

set terminal pngcairo size 1100,520 font ",10"
set output png
set datafile separator ","
set key top right
set ylabel "cost per token, relative"
set yrange [0:1.2]
set ytics 0.1
set grid ytics
set xtics rotate by 60 right font ",8"
set style fill solid 0.8 border -1
set boxwidth 0.4
set arrow from graph 0, first 1.03 to graph 1, first 1.03 nohead dt 2 lc rgb "#d9480f"
set label "3 % goal" at graph 0.01, first 1.05 tc rgb "#d9480f"

# Column 14 is the automatic choice, 6 standard decoding, 16 automatic / best.
plot csv skip 1 using ($0 - 0.2):16:xtic(1) with boxes lc rgb "#1f5fbf" title "automatic / best fixed method", \
     csv skip 1 using ($0 + 0.2):($14 / $6) with boxes lc rgb "#999999" title "automatic / standard decoding"

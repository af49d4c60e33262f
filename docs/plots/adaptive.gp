# Adaptive against every fixed proposal length under the cost clock, from the CSV of
# cospec-adaptive-sweep (docs/benchmarks.md, "Adaptive speculation"): speedup over standard
# collaborative decoding against model agreement. Thin lines: CoS at each fixed length g of the
# cheap model; thick line with marks: cospec::adaptive. Rows: the weighted ensemble and
# contrastive decoding; columns: the cost of a pass of the cheap model relative to the other's.
#
# Run from the repository root (gnuplot 5.4 with the pngcairo terminal, e.g. gnuplot-nox):
#   ./build/release/examples/cospec-adaptive-sweep --csv docs/plots/adaptive_sweep.csv
#   gnuplot docs/plots/adaptive.gp
# Other paths: gnuplot -e "csv='sweep.csv'; png='adaptive.png'" docs/plots/adaptive.gp

if (!exists("csv")) csv = 'docs/plots/adaptive_sweep.csv'
if (!exists("png")) png = 'docs/plots/adaptive.png'

set datafile separator ','
set terminal pngcairo size 1500,850 font 'sans,10'
set output png

array combinations[2] = ["WE (0.5 0.5)", "CD mu 0.1 expert proposes"]
array titles[2] = ["weighted ensemble 0.5/0.5", "contrastive decoding mu 0.1, expert proposes"]
array ratios[3] = [1, 8, 100]
array gammas[6] = [1, 2, 3, 4, 6, 8]
array colors[6] = [0x9ecae1, 0x6baed6, 0x4292c6, 0x2171b5, 0x08519c, 0x08306b]

# Column 8 + i is the speedup at gammas[i + 1]; column 7 is adaptive's.
pick(c, r) = (strcol(1) eq 'steady' && strcol(2) eq combinations[c] && $3 == ratios[r]) ? $4 : NaN

set multiplot layout 2,3 title "Adaptive (black) against fixed proposal lengths (blue, light g = 1 to dark g = 8), cost clock"
set xlabel 'model agreement'
set ylabel 'speedup over standard decoding'
set key top left
set grid
do for [c = 1:2] {
  do for [r = 1:3] {
    set title sprintf("%s, cost 1:%d", titles[c], ratios[r])
    plot for [i = 1:6] csv using (pick(c, r)):(column(7 + i)) skip 1 with lines lw 1 lc rgb colors[i] \
           title sprintf("g = %d", gammas[i]), \
         csv using (pick(c, r)):7 skip 1 with linespoints lw 3 pt 7 lc rgb 'black' title 'adaptive'
  }
}
unset multiplot
